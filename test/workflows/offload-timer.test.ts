// shelved_offload_time > 0: the durable timer that offloads later, on a stub compute host.
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowNotFoundError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { offloadTimerWorkflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

describe('shelved_offload_time > 0', () => {
  let stack: TestStack;
  let stub: StubHost;

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack);
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  async function shelve(instanceUuid: string, seconds: number): Promise<Instance> {
    const handle = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid,
      shelvedOffloadTime: seconds,
    });
    return (await handle.result()) as Instance;
  }

  const timerOf = (instance: Instance) =>
    stack.client.workflow.getHandle(offloadTimerWorkflowId(instance.uuid, instance.systemMetadata.shelved_image_id!));

  it('leaves the instance SHELVED, then offloads it when the timer fires', async () => {
    const { uuid } = await stub.buildInstance();
    const shelved = await shelve(uuid, 2);
    expect(shelved).toMatchObject({ vmState: 'shelved', taskState: null, host: stub.host });

    const offloaded = (await timerOf(shelved).result()) as Instance;
    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(offloaded.systemMetadata.shelved_image_id).toBe(shelved.systemMetadata.shelved_image_id);
  });

  it('fires while another action holds the instance: tries again, and offloads once it is free', async () => {
    const { uuid } = await stub.buildInstance();
    const shelved = await shelve(uuid, 1);
    const hold = (taskState: string | null, requestId: string | null) =>
      stack.pool.query('UPDATE instances SET task_state = $2, task_request_id = $3 WHERE uuid = $1', [
        uuid,
        taskState,
        requestId,
      ]);
    await hold('shelving', 'req-other');
    await sleep(2500);
    expect((await timerOf(shelved).describe()).status.name).toBe('RUNNING');
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'shelved', host: stub.host });

    await hold(null, null);
    expect(await timerOf(shelved).result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null });
  });

  it('is cancelled by an unshelve, and the instance stays ACTIVE on its host', async () => {
    const { uuid } = await stub.buildInstance();
    const shelved = await shelve(uuid, 3600);
    await (await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: uuid })).result();

    const timer = await timerOf(shelved).describe();
    expect(timer.status.name).toBe('CANCELLED');
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null, host: stub.host });
  });

  it('does nothing when it fires for a shelve that is over', async () => {
    const { uuid } = await stub.buildInstance();
    const first = await shelve(uuid, -1);
    await (await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: uuid })).result();
    const second = await shelve(uuid, -1);
    // A timer of the first shelve, firing now: the instance is SHELVED again, by another shelve.
    const stale = await stack.client.workflow.start('shelvedOffloadTimer', {
      taskQueue: stack.config.temporal.conductorTaskQueue,
      workflowId: offloadTimerWorkflowId(uuid, first.systemMetadata.shelved_image_id!),
      args: [{ instanceUuid: uuid, shelvedImageId: first.systemMetadata.shelved_image_id, seconds: 0 }],
    });
    expect(await stale.result()).toBeNull();
    expect(await getInstance(stack.pool, uuid)).toMatchObject({
      vmState: 'shelved',
      taskState: null,
      systemMetadata: { shelved_image_id: second.systemMetadata.shelved_image_id },
    });
    await expect(timerOf(second).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
  });
});
