// Acceptance: the real `openstack` command-line client (Debian's python3-openstackclient) drives
// a full cycle through this API, on the real stack with a real VM. Tokens are noauth2 ones, sent
// as they are with the client's admin_token auth type.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rootDiskFile } from '../../lib/host-paths.js';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import { sameGuestContent } from '../../lib/qemu-img.js';
import { createSampleDisk, removeSampleDisk, type SampleDisk, uploadBootImage } from '../../lib/sample-disk.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const run = promisify(execFile);
const project = `osc-${randomUUID().slice(0, 8)}`;
const member = `osc-user:${project}`;
const admin = 'admin:admin-project';

describe('the openstack client against the API', () => {
  let stack: TestStack;
  let api: FastifyInstance;
  let endpoint: string;
  let disk: SampleDisk;
  let imageId: string;
  let serverId: string;

  /** Runs `openstack …` as `token`; parses its JSON output when it has one. */
  async function openstack(token: string, args: string[], version = '2.1'): Promise<unknown> {
    const { stdout } = await run('openstack', [
      '--os-auth-type',
      'admin_token',
      '--os-endpoint',
      endpoint,
      '--os-token',
      token,
      '--os-compute-api-version',
      version,
      ...args,
    ]);
    return stdout.trim() ? JSON.parse(stdout) : undefined;
  }

  beforeAll(async () => {
    // SHELVED stays SHELVED until asked, and a guest with no OS ignores a clean shutdown anyway.
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1', SHUTDOWN_TIMEOUT: '1' });
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    endpoint = `${await api.listen({ host: '127.0.0.1', port: 0 })}/v2.1`;
    disk = await createSampleDisk(path.join(tmpdir(), 'vm-shelve-osc'), project);
    imageId = await uploadBootImage(stack.glance, { projectId: project, userId: 'osc-user' }, disk.image, {
      id: randomUUID(),
      name: `${project}-boot`,
    });
  });

  afterAll(async () => {
    if (serverId) await stack.compute.removeInstance(serverId);
    if (imageId) await stack.glance.deleteImage({ projectId: project, userId: 'osc-user' }, imageId);
    if (disk) await removeSampleDisk(disk);
    await api?.close();
    await stack?.stop();
  });

  const show = async (token = member) =>
    (await openstack(token, ['server', 'show', serverId, '-f', 'json'])) as Record<string, unknown>;

  // One journey on one VM, from its creation to its delete: each step starts from where the previous one left it.
  it('creates a server, shelves, offloads and unshelves it, hides it from others, lists its events, deletes it', async () => {
    // Created from a Glance image and a flavor name.
    const created = (await openstack(member, [
      'server',
      'create',
      '--image',
      imageId,
      '--flavor',
      'm1.nano',
      '--wait',
      '-f',
      'json',
      `${project}-vm`,
    ])) as Record<string, unknown>;
    serverId = created.id as string;
    expect(await show(), 'after the create').toMatchObject({
      status: 'ACTIVE',
      name: `${project}-vm`,
      project_id: project,
    });

    // Shelved, refused offload as a member, offloaded as admin, unshelved into a zone (2.77).
    await openstack(member, ['server', 'shelve', '--wait', serverId]);
    expect(await show(), 'after the shelve').toMatchObject({ status: 'SHELVED', 'OS-EXT-STS:task_state': null });

    await expect(openstack(member, ['server', 'shelve', '--offload', serverId]), "a member's offload").rejects.toThrow(
      /HTTP 403/,
    );
    await openstack(admin, ['server', 'shelve', '--offload', '--wait', serverId]);
    expect(await show(admin), 'after the offload').toMatchObject({
      status: 'SHELVED_OFFLOADED',
      'OS-EXT-SRV-ATTR:host': null,
    });

    const zone = stack.config.compute.availabilityZone;
    await openstack(member, ['server', 'unshelve', '--availability-zone', zone, '--wait', serverId], '2.77');
    expect(await show(admin), 'after the unshelve').toMatchObject({
      status: 'ACTIVE',
      'OS-EXT-AZ:availability_zone': zone,
      'OS-EXT-SRV-ATTR:host': stack.config.compute.host,
    });
    const instance = await getInstance(stack.pool, serverId);
    expect(
      await sameGuestContent(disk.reference, rootDiskFile(stack.config.compute, instance)),
      'the disk after the unshelve',
    ).toBe(true);

    // Another project does not find it.
    await expect(
      openstack(`x:${randomUUID()}`, ['server', 'show', serverId]),
      "another project's show",
    ).rejects.toThrow(/No server with a name or ID/);

    // Its events.
    const events = (await openstack(member, ['server', 'event', 'list', serverId, '-f', 'json'])) as {
      Action: string;
    }[];
    expect(
      events.map((event) => event.Action),
      'the server events',
    ).toEqual(['unshelve', 'shelveOffload', 'shelve', 'create']);

    // Deleted: its domain goes from the host.
    await openstack(member, ['server', 'delete', '--wait', serverId]);
    await expect(openstack(member, ['server', 'show', serverId]), 'after the delete').rejects.toThrow(
      /No server with a name or ID/,
    );
    expect(await stack.libvirt.lookupInstance(serverId), 'the domain after the delete').toBeNull();
  });

  it('lists the compute services, and disables and enables one (2.53)', async () => {
    const { host } = stack.config.compute;
    const services = async () =>
      (await openstack(
        admin,
        ['compute', 'service', 'list', '--long', '--host', host, '-f', 'json'],
        '2.53',
      )) as Record<string, unknown>[];
    expect(await services()).toMatchObject([{ Binary: 'nova-compute', Host: host, Status: 'enabled', State: 'up' }]);
    const set = ['compute', 'service', 'set', host, 'nova-compute'];
    await openstack(admin, [...set, '--disable', '--disable-reason', 'osc test'], '2.53');
    try {
      expect(await services()).toMatchObject([{ Status: 'disabled', 'Disabled Reason': 'osc test' }]);
    } finally {
      await openstack(admin, [...set, '--enable'], '2.53');
    }
    expect(await services()).toMatchObject([{ Status: 'enabled' }]);
  });
});
