// The Temporal server stopped in the middle of a shelve's snapshot upload and started again a
// few seconds later, its state kept on disk: the workers reconnect, the upload's result reaches
// the server, and the shelve completes with one image and the guest's bytes intact.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAction } from '../../lib/actions.js';
import { expectSingleSnapshot, midTransfer, startShelve, startStack, stopTemporal } from '../support/faults.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('the Temporal server restarted mid-shelve', () => {
  let stack: TestStack;
  let vm: KnownVm;

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host, { sizeMiB: 2048, flavor: { rootGb: 2 } });
  }, 300_000);

  afterAll(async () => {
    await startStack();
    await vm?.remove();
    await stack?.stop();
  }, 120_000);

  it('during the snapshot upload: the shelve completes, then the unshelve, the disk intact', async () => {
    const { instanceUuid } = vm;
    const shelve = await startShelve(stack, instanceUuid);
    await midTransfer(shelve, 'upload');
    await stopTemporal();
    await sleep(3000);
    await startStack();

    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    await expectSingleSnapshot(stack, vm);
    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    expect(await unshelve.result()).toMatchObject({ vmState: 'active', taskState: null, powerState: 1 });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });
});
