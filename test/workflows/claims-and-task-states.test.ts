// What the database shows while each step runs, read by the stub compute host from inside the
// step; and two workflows racing for one instance through the claim, as two starts from the API,
// the CLI or the Temporal CLI would.
import { randomUUID } from 'node:crypto';
import { type WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { claimInstance } from '../../lib/db/task-states.js';
import { startAction } from '../../lib/actions.js';
import { PowerState } from '../../lib/nova.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

describe('claims and task states', () => {
  let stack: TestStack;
  let stub: StubHost;
  /** The task_state each compute step saw in the database while it ran. */
  const seen: string[] = [];
  /** Power-offs held until the test lets them go, by instance: an action kept in flight. */
  const held = new Map<string, { entered: () => void; released: Promise<void> }>();
  function holdPowerOff(instanceUuid: string) {
    let entered!: () => void;
    let release!: () => void;
    const enteredPromise = new Promise<void>((resolve) => (entered = resolve));
    held.set(instanceUuid, { entered, released: new Promise<void>((resolve) => (release = resolve)) });
    return { entered: enteredPromise, release };
  }

  beforeAll(async () => {
    stack = await startTestStack();
    const observe = async (step: string, instanceUuid: string) => {
      seen.push(`${step}:${(await getInstance(stack.pool, instanceUuid)).taskState}`);
    };
    stub = await startStubHost(stack, {
      async powerOffInstance({ instanceUuid }) {
        const hold = held.get(instanceUuid);
        if (hold) {
          hold.entered();
          await hold.released;
          return PowerState.SHUTDOWN;
        }
        await observe('power off', instanceUuid);
        await new Promise((resolve) => setTimeout(resolve, 500));
        return PowerState.SHUTDOWN;
      },
      async snapshotInstance({ instance, imageId }) {
        await observe('snapshot', instance.uuid);
        return stub.snapshot(imageId);
      },
      async destroyInstance({ instanceUuid }) {
        await observe('offload', instanceUuid);
      },
      async spawnInstance({ instance }) {
        await observe('spawn', instance.uuid);
        return PowerState.RUNNING;
      },
      async powerOnInstance({ instanceUuid }) {
        await observe('power on', instanceUuid);
        return PowerState.RUNNING;
      },
    });
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  it('shows each intermediate task_state in the database while its step runs', async () => {
    const { uuid: instanceUuid } = await stub.buildInstance();
    seen.length = 0;
    const run = async (action: 'shelve' | 'unshelve', input: object = {}) =>
      (await startAction(stack.client, stack.config, action, { instanceUuid, ...input })).result();

    await run('shelve', { shelvedOffloadTime: -1 });
    await run('unshelve');
    await run('shelve', { shelvedOffloadTime: 0 });
    await run('unshelve');
    expect(seen).toEqual([
      'power off:shelving',
      'snapshot:shelving_image_uploading',
      'power on:powering-on',
      'power off:shelving',
      'snapshot:shelving_image_uploading',
      'offload:shelving_offloading',
      'spawn:spawning',
    ]);
  });

  it('lets exactly one of two racing workflows proceed; the other fails at once naming the state', async () => {
    const { uuid: instanceUuid } = await stub.buildInstance();
    // Two shelves of one instance under different workflow ids, as a Temporal CLI start could do.
    const start = (workflowId: string) =>
      stack.client.workflow.start('shelveInstance', {
        taskQueue: stack.config.temporal.conductorTaskQueue,
        workflowId,
        args: [{ instanceUuid, shelvedOffloadTime: -1 }],
      });
    const handles = await Promise.all([start(`race-a-${randomUUID()}`), start(`race-b-${randomUUID()}`)]);
    const results = await Promise.allSettled(handles.map((handle) => handle.result()));

    expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
    const [lost] = results.filter((result) => result.status === 'rejected');
    const failure = (lost as PromiseRejectedResult).reason as WorkflowFailedError;
    // The loser sees the winner's task, or its result if the winner was already done: both a 409.
    expect(failure.cause).toMatchObject({
      type: expect.stringMatching(/^(UnexpectedTaskState|InstanceInvalidState)$/),
      message: expect.stringMatching(
        new RegExp(`^Cannot 'shelve' instance ${instanceUuid} while it is in (task_state shelving|vm_state shelved)`),
      ),
    });
    expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({ vmState: 'shelved', taskState: null });
  });

  it("refuses a workflow that presents an in-flight action's request id under another workflow id", async () => {
    const { uuid: instanceUuid } = await stub.buildInstance();
    const requestId = `req-${randomUUID()}`;
    const hold = holdPowerOff(instanceUuid);
    // The API's way: the claim for the request and the workflow it is about to start, then the start.
    await claimInstance(stack.pool, {
      instanceUuid,
      action: 'shelve',
      requestId,
      workflowId: workflowId('shelve', instanceUuid),
    });
    const owner = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid,
      requestId,
      shelvedOffloadTime: -1,
    });
    await hold.entered;
    const before = await getInstance(stack.pool, instanceUuid);

    // Another workflow, as a Temporal CLI start could make, with the same request id.
    const intruder = await stack.client.workflow.start('shelveInstance', {
      taskQueue: stack.config.temporal.conductorTaskQueue,
      workflowId: `intruder-${randomUUID()}`,
      args: [{ instanceUuid, requestId, shelvedOffloadTime: -1 }],
    });
    const failure = await intruder.result().then(
      () => expect.unreachable('the intruder took the claim'),
      (error: WorkflowFailedError) => error,
    );
    expect(failure.cause).toMatchObject({
      type: 'UnexpectedTaskState',
      nonRetryable: true,
      message: `Cannot 'shelve' instance ${instanceUuid} while it is in task_state shelving`,
    });
    // Refused at its claim, once: nothing of the instance changed, the owner still holds it.
    expect(await getInstance(stack.pool, instanceUuid)).toEqual(before);
    const claims = (await intruder.fetchHistory()).events?.filter(
      (event) => event.activityTaskScheduledEventAttributes?.activityType?.name === 'claimInstance',
    );
    expect(claims).toHaveLength(1);

    hold.release();
    expect(await owner.result()).toMatchObject({ vmState: 'shelved', taskState: null });
    const actions = await listInstanceActions(stack.pool, instanceUuid);
    expect(actions.filter((action) => action.requestId === requestId)).toMatchObject([
      { action: 'shelve', message: null, workflowId: workflowId('shelve', instanceUuid) },
    ]);
  });
});
