// Hostile server names, through the API to a real compute host and back: shell metacharacters,
// path separators and '..', the longest name Nova allows, non-ASCII. Each is stored and shown as
// it was given, names its snapshot image in Glance, and is never executed or made into a path:
// the host's files are named after the instance's uuid only.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import type { Action } from '../../lib/actions.js';
import { type Instance, shelvedImageName } from '../../lib/nova.js';
import { createSampleDisk, removeSampleDisk, type SampleDisk, uploadBootImage } from '../../lib/sample-disk.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const owner = { userId: 'names-user', projectId: 'names-project' };
const token = `${owner.userId}:${owner.projectId}`;
const canary = path.join(tmpdir(), `vm-shelve-executed-${randomUUID()}`);

const NAMES = [
  // Within Nova's 255 characters, or the API refuses it before anything could run it.
  `$(touch ${canary}); \`touch ${canary}\` && echo "x" > ${canary}`,
  '../../../../etc/passwd/..\\..\\windows',
  // 255 characters, Nova's longest name (318 UTF-16 units).
  `${'ü名前🙂'.repeat(63)}xyz`,
];

describe('hostile server names', () => {
  let stack: TestStack;
  let api: FastifyInstance;
  let imageId: string;
  let disk: SampleDisk | undefined;
  const created: string[] = [];

  beforeAll(async () => {
    // The guest has no OS to answer a clean shutdown: a short timeout, then destroy.
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '0', SHUTDOWN_TIMEOUT: '1' });
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    disk = await createSampleDisk(path.join(tmpdir(), 'vm-shelve-names'), randomUUID(), 16);
    imageId = await uploadBootImage(stack.glance, owner, disk.image, { id: randomUUID(), name: 'names-boot' });
  });

  afterAll(async () => {
    for (const uuid of created) await stack.compute.removeInstance(uuid);
    await stack?.glance.deleteImage(owner, imageId);
    if (disk) await removeSampleDisk(disk);
    await api?.close();
    await stack?.stop();
  });

  async function request(method: 'GET' | 'POST', url: string, body?: unknown) {
    const response = await api.inject({
      method,
      url,
      headers: { 'x-auth-token': token, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { payload: JSON.stringify(body) } : {}),
    });
    expect(response.statusCode, response.body).toBeLessThan(300);
    return response.body ? (response.json() as Record<string, Record<string, unknown>>) : {};
  }

  const finished = async (action: Action, uuid: string) =>
    (await stack.client.workflow.getHandle(workflowId(action, uuid)).result()) as Instance;

  it.each(NAMES.map((name) => [name.slice(0, 40), name]))(
    'keeps %s… as given through build, shelve and unshelve, naming nothing on the host',
    async (_, name) => {
      const { server } = await request('POST', '/v2.1/servers', {
        server: { name, imageRef: imageId, flavorRef: '1' },
      });
      const uuid = server!.id as string;
      created.push(uuid);
      await finished('build', uuid);
      expect((await request('GET', `/v2.1/servers/${uuid}`)).server!.name).toBe(name);

      await request('POST', `/v2.1/servers/${uuid}/action`, { shelve: null });
      await finished('shelve', uuid);
      const shelvedImageId = (await getInstance(stack.pool, uuid)).systemMetadata.shelved_image_id!;
      expect((await stack.glance.getImage(owner, shelvedImageId))?.name).toBe(shelvedImageName({ displayName: name }));

      await request('POST', `/v2.1/servers/${uuid}/action`, { unshelve: null });
      expect(await finished('unshelve', uuid)).toMatchObject({ vmState: 'active', displayName: name });
      expect(await readdir(stack.config.compute.instancesPath)).toContain(uuid);
      expect(existsSync(canary)).toBe(false);
      // Nothing on the host is named after a server.
      const entries = await readdir(path.dirname(stack.config.compute.instancesPath), { recursive: true });
      expect(entries.filter((entry) => /passwd|windows|名前|touch/.test(entry))).toEqual([]);
    },
  );
});
