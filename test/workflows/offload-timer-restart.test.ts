// The offload timer is durable: it fires on time although every worker stopped and the Temporal
// server restarted while it waited. This test restarts the stack's own Temporal, the dev server
// or every process of the cluster (state on disk), through scripts/stack.
import { afterAll, describe, expect, it } from 'vitest';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { offloadTimerWorkflowId } from '../../lib/temporal.js';
import { startStack, stopTemporal } from '../support/faults.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

describe('the offload timer across restarts', () => {
  let stack: TestStack | undefined;
  let stub: StubHost | undefined;

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  it('offloads after N seconds although the workers and the Temporal server restarted meanwhile', async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack);
    const host = stub.host;
    const { uuid: instanceUuid } = await stub.buildInstance();
    const shelve = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: 8 });
    const shelved = (await shelve.result()) as Instance;
    expect(shelved).toMatchObject({ vmState: 'shelved', host });

    // Every worker gone, then the server itself; the snapshot stays, as the offload needs it.
    await stub.stop({ keepSnapshots: true });
    await stack.stop();
    stub = stack = undefined;
    await stopTemporal();
    await startStack();

    stack = await startTestStack();
    stub = await startStubHost(stack, {}, { host });
    const imageId = shelved.systemMetadata.shelved_image_id!;
    const timer = stack.client.workflow.getHandle(offloadTimerWorkflowId(instanceUuid, imageId));
    expect(await timer.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    await stack.glance.unprotectAndDelete(stack.glance.snapshotContext, imageId);
  });
});
