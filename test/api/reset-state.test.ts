// Nova's admin os-resetState: a shelve whose workflow an operator terminated (no code of it runs
// again) leaves the instance claimed; a reset frees it at once (the reconciler would after its
// grace period: test/faults/terminate.test.ts).
import { setTimeout as sleep } from 'node:timers/promises';
import { Context } from '@temporalio/activity';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import type { Instance } from '../../lib/nova.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const owner = `${testOwner.userId}:${testOwner.projectId}`;
const admin = 'admin:admin-project';

describe('os-resetState', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  let uploadHangs = true;
  /** The images of terminated shelves, which no rollback deletes. */
  const stranded: string[] = [];

  beforeAll(async () => {
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1' });
    stub = await startStubHost(stack, {
      async snapshotInstance({ imageId }) {
        // An upload that goes on until its workflow is gone (cancelled with it).
        stranded.push(imageId);
        while (uploadHangs) {
          Context.current().heartbeat();
          await Context.current().sleep(200);
        }
        return stub.snapshot(imageId);
      },
    });
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
  });

  afterAll(async () => {
    for (const imageId of stranded) await stack.glance.unprotectAndDelete(stack.glance.snapshotContext, imageId);
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  const act = (uuid: string, body: unknown, token: string) =>
    api.inject({
      method: 'POST',
      url: `/v2.1/servers/${uuid}/action`,
      headers: { 'x-auth-token': token, 'content-type': 'application/json' },
      payload: JSON.stringify(body),
    });

  async function taskState(uuid: string, wanted: string): Promise<void> {
    while ((await getInstance(stack.pool, uuid)).taskState !== wanted) await sleep(100);
  }

  it('frees an instance whose shelve was terminated, and only once that workflow is gone', async () => {
    const { uuid } = await stub.buildInstance();
    expect((await act(uuid, { shelve: null }, owner)).statusCode).toBe(202);
    await taskState(uuid, 'shelving_image_uploading');

    const reset = { 'os-resetState': { state: 'active' } };
    const refused = await act(uuid, reset, owner);
    expect(refused.statusCode).toBe(403);
    expect(refused.json().forbidden.message).toBe(
      "Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed.",
    );
    const bad = await act(uuid, { 'os-resetState': { state: 'building' } }, admin);
    expect(bad.statusCode).toBe(400);
    expect(bad.json().badRequest.message).toMatch(/^Invalid input for field\/attribute os-resetState\.state/);
    const running = await act(uuid, reset, admin);
    expect(running.statusCode).toBe(409);
    expect(running.json().conflictingRequest.message).toBe(
      `Instance ${uuid} is held by workflow ${workflowId('shelve', uuid)}, which still runs: cancel or terminate it first.`,
    );

    await stack.client.workflow.getHandle(workflowId('shelve', uuid)).terminate('test: an operator terminates');
    // Stranded: no code of the shelve runs again, and every action is refused.
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ taskState: 'shelving_image_uploading' });
    expect((await act(uuid, { shelve: null }, owner)).statusCode).toBe(409);

    expect((await act(uuid, reset, admin)).statusCode).toBe(202);
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null });

    // Free again: the next shelve runs to its end.
    uploadHangs = false;
    expect((await act(uuid, { shelve: null }, owner)).statusCode).toBe(202);
    const shelved = (await stack.client.workflow.getHandle(workflowId('shelve', uuid)).result()) as Instance;
    expect(shelved).toMatchObject({ vmState: 'shelved', taskState: null });

    expect((await act(uuid, { 'os-resetState': { state: 'error' } }, admin)).statusCode).toBe(202);
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'error', taskState: null });
  });
});
