// An action on an instance whose host has no compute worker fails cleanly after
// COMPUTE_HOST_TIMEOUT, instead of waiting forever (as Nova's casts to a dead compute do), and
// says meanwhile what it waits for.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { currentProgress, startAction } from '../../lib/actions.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

describe('a host whose compute worker is gone', () => {
  let stack: TestStack;
  let stub: StubHost;

  beforeAll(async () => {
    stack = await startTestStack({ COMPUTE_HOST_TIMEOUT: '6' });
    stub = await startStubHost(stack);
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  it('waits visibly, then fails the shelve after the deadline with the reason, leaving the instance as it was', async () => {
    const { uuid } = await stub.buildInstance();
    // The instance now lives on a host no worker serves.
    const ghost = `ghost-${randomUUID().slice(0, 8)}`;
    await stack.pool.query('UPDATE instances SET host = $2, node = $2 WHERE uuid = $1', [uuid, ghost]);

    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid: uuid });
    // Meanwhile the action says what it waits for (the CLI's watch prints it).
    let progress = await currentProgress(handle);
    while (!progress?.step.startsWith('waiting')) {
      await sleep(200);
      progress = await currentProgress(handle);
    }
    expect(progress.step).toMatch(new RegExp(`^waiting \\d+s for compute host ${ghost} to take powerOffInstance$`));
    const error = (await handle.result().catch((failure: unknown) => failure)) as WorkflowFailedError;
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(error.cause).toMatchObject({
      type: 'ComputeHostUnavailable',
      message: `Compute host ${ghost} did not take the step powerOffInstance in time: is its compute worker running?`,
    });
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null, host: ghost });
    const [shelve] = await listInstanceActions(stack.pool, uuid);
    expect(shelve).toMatchObject({ action: 'shelve', message: 'Error' });
    expect(shelve!.events[0]).toMatchObject({ event: 'compute_power_off_instance', result: 'Error' });
  });
});
