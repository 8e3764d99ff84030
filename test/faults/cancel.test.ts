// An operator cancelling an action in the middle (the Web UI's Cancel, `temporal workflow cancel`):
// the action rolls back as a failed one does, the instance is free for the next action, and its
// bytes are intact.
import { WorkflowFailedError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { expectSingleSnapshot, midTransfer, startShelve, expectOffHost } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('an action cancelled by an operator', () => {
  let stack: TestStack;
  let vm: KnownVm;

  beforeAll(async () => {
    stack = await startTestStack();
    // Large enough that its upload and download take seconds.
    vm = await buildKnownVm(stack, stack.config.compute.host, { sizeMiB: 2048, flavor: { rootGb: 2 } });
  }, 300_000);

  afterAll(async () => {
    await vm?.remove();
    await stack?.stop();
  });

  async function cancelledFailure(handle: Awaited<ReturnType<typeof startAction>>): Promise<void> {
    await handle.cancel();
    const failure = await handle.result().then(
      () => null,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    expect((failure as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
  }

  async function lastAction() {
    return (await listInstanceActions(stack.pool, vm.instanceUuid))[0];
  }

  it('during the snapshot upload: the shelve rolls back, the guest runs again, no image is left', async () => {
    const handle = await startShelve(stack, vm.instanceUuid);
    await midTransfer(handle, 'upload');
    await cancelledFailure(handle);

    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host: stack.config.compute.host,
    });
    expect(await stack.glance.listImages(e2eOwner, { name: `${vm.displayName}-shelved` })).toEqual([]);
    expect(await lastAction()).toMatchObject({
      action: 'shelve',
      message: 'Cancelled',
      reason: `cancelled by ${stack.client.options.identity}`,
    });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });

  it('during the snapshot download: the unshelve rolls back to SHELVED_OFFLOADED, the snapshot kept', async () => {
    const shelve = await startShelve(stack, vm.instanceUuid);
    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded' });

    const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    await midTransfer(handle, 'download');
    await cancelledFailure(handle);

    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
    });
    await expectOffHost(stack, vm.instanceUuid);
    await expectSingleSnapshot(stack, vm);
    expect(await lastAction()).toMatchObject({
      action: 'unshelve',
      message: 'Cancelled',
      reason: `cancelled by ${stack.client.options.identity}`,
    });

    // Nothing is stranded: the next unshelve brings the same bytes back.
    const again = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    expect((await again.result()) as Instance).toMatchObject({ vmState: 'active', taskState: null });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });
});
