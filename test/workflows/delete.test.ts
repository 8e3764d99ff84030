// Deleting a server through the API, from each state a user may leave it in, on a stub compute
// host beside the real conductor, PostgreSQL and Glance: the domain and files go from the host,
// the shelve snapshot from Glance, and the server from every lookup; its actions log stays.
import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import { type Action, startAction } from '../../lib/actions.js';
import { type Instance, PowerState } from '../../lib/nova.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const owner = `${testOwner.userId}:${testOwner.projectId}`;

describe('deleting a server', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  const destroyed: string[] = [];
  let spawnFails = false;

  beforeAll(async () => {
    // Shelve leaves servers SHELVED, so that a shelved server's snapshot is still in Glance.
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1' });
    stub = await startStubHost(stack, {
      async destroyInstance({ instanceUuid }) {
        destroyed.push(instanceUuid);
      },
      async spawnInstance() {
        if (spawnFails) throw ApplicationFailure.nonRetryable('QEMU refused to start the domain', 'SpawnFailed');
        return PowerState.RUNNING;
      },
    });
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  const call = (method: 'GET' | 'DELETE', url: string) =>
    api.inject({ method, url, headers: { 'x-auth-token': owner } });

  async function run(action: Action, instanceUuid: string): Promise<Instance> {
    return (await (await startAction(stack.client, stack.config, action, { instanceUuid })).result()) as Instance;
  }

  /** Deletes through the API and waits for the delete to end; the server is then gone. */
  async function deleteServer(uuid: string): Promise<void> {
    const response = await call('DELETE', `/v2.1/servers/${uuid}`);
    expect(response.statusCode, response.body).toBe(204);
    await stack.client.workflow.getHandle(workflowId('delete', uuid)).result();
    expect((await call('GET', `/v2.1/servers/${uuid}`)).statusCode).toBe(404);
    const listed = (await call('GET', '/v2.1/servers/detail')).json().servers as { id: string }[];
    expect(listed.map((server) => server.id)).not.toContain(uuid);
    await expect(getInstance(stack.pool, uuid)).rejects.toMatchObject({ type: 'InstanceNotFound' });
  }

  it('an ACTIVE server: its domain and files go from the host; the actions log keeps the delete', async () => {
    const { uuid } = await stub.buildInstance();
    await deleteServer(uuid);
    expect(destroyed).toContain(uuid);
    const actions = await listInstanceActions(stack.pool, uuid);
    expect(actions.map((action) => [action.action, action.message])).toEqual([
      ['delete', null],
      ['create', null],
    ]);
    expect(actions[0]!.events).toEqual([
      expect.objectContaining({ event: 'compute_terminate_instance', result: 'Success', host: stub.host }),
    ]);
    const { rows } = await stack.pool.query('SELECT vm_state, host, deleted_at FROM instances WHERE uuid = $1', [uuid]);
    expect(rows[0]).toMatchObject({ vm_state: 'deleted', host: null, deleted_at: expect.any(Date) });
  });

  it.each(['stopped', 'paused', 'suspended', 'error'])(
    'a server %s on its host: its domain and files go from the host',
    async (vmState) => {
      const { uuid } = await stub.buildInstance();
      // As Nova's stop, pause, suspend or reset-state would leave it: this project has no such action.
      await stack.pool.query('UPDATE instances SET vm_state = $2 WHERE uuid = $1', [uuid, vmState]);
      await deleteServer(uuid);
      expect(destroyed).toContain(uuid);
    },
  );

  it('a SHELVED server: its snapshot goes from Glance too', async () => {
    const { uuid } = await stub.buildInstance();
    const imageId = (await run('shelve', uuid)).systemMetadata.shelved_image_id!;
    expect(await stack.glance.getImage(testOwner, imageId)).not.toBeNull();
    await deleteServer(uuid);
    expect(await stack.glance.getImage(testOwner, imageId)).toBeNull();
  });

  it('a SHELVED_OFFLOADED server: nothing on any host to remove, the snapshot goes', async () => {
    const { uuid } = await stub.buildInstance();
    await run('shelve', uuid);
    const imageId = (await run('shelveOffload', uuid)).systemMetadata.shelved_image_id!;
    destroyed.length = 0;
    await deleteServer(uuid);
    expect(destroyed).toEqual([]);
    expect(await stack.glance.getImage(testOwner, imageId)).toBeNull();
  });

  it('a server whose build failed (no host in its zone): ERROR, never launched, on no host, deletable', async () => {
    const zone = `az-nowhere-${randomUUID().slice(0, 8)}`;
    await expect(stub.buildInstance({ availabilityZone: zone })).rejects.toThrow();
    const { rows } = await stack.pool.query<{ uuid: string }>(
      'SELECT uuid FROM instances WHERE requested_availability_zone = $1',
      [zone],
    );
    const uuid = rows[0]!.uuid;
    expect(await getInstance(stack.pool, uuid)).toMatchObject({
      vmState: 'error',
      taskState: null,
      launchedAt: null,
      host: null,
    });
    await deleteServer(uuid);
  });

  it('a server whose spawn failed: ERROR, its host cleaned and no longer holding it, deletable', async () => {
    spawnFails = true;
    try {
      await expect(stub.buildInstance()).rejects.toThrow();
    } finally {
      // Even when this case fails, the other cases' builds spawn.
      spawnFails = false;
    }
    const { rows } = await stack.pool.query<{ uuid: string }>(
      `SELECT uuid FROM instances WHERE project_id = $1 AND vm_state = 'error' ORDER BY created_at DESC LIMIT 1`,
      [testOwner.projectId],
    );
    const uuid = rows[0]!.uuid;
    expect(destroyed).toContain(uuid);
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'error', taskState: null, host: null });
    await deleteServer(uuid);
  });

  it('is refused while another action holds the server (409), and a deleted server is 404', async () => {
    const { uuid } = await stub.buildInstance();
    await stack.pool.query(
      `UPDATE instances SET task_state = 'shelving', task_request_id = 'req-other' WHERE uuid = $1`,
      [uuid],
    );
    const refused = await call('DELETE', `/v2.1/servers/${uuid}`);
    expect(refused.statusCode).toBe(409);
    expect(refused.json().conflictingRequest.message).toBe(
      `Cannot 'delete' instance ${uuid} while it is in task_state shelving`,
    );
    await stack.pool.query('UPDATE instances SET task_state = NULL, task_request_id = NULL WHERE uuid = $1', [uuid]);
    await deleteServer(uuid);
    expect((await call('DELETE', `/v2.1/servers/${uuid}`)).statusCode).toBe(404);
  });
});
