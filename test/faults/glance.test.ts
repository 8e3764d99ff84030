// Glance failing under a shelve and an unshelve: stopped in the middle of the snapshot upload
// (the shelve waits it out and completes), and serving a corrupted image (the unshelve refuses
// to boot it and leaves the instance SHELVED_OFFLOADED, image kept, ready for another try).
import { open } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import {
  expectSingleSnapshot,
  midTransfer,
  stackDir,
  startShelve,
  startStack,
  stopService,
} from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('Glance failing', () => {
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

  // One journey on one 2 GiB VM, the unshelve needing the snapshot the shelve made; two transfers
  // and a Glance restart, hence the longer timeout.
  it('stopped during the snapshot upload, the shelve completes; serving it corrupted, the unshelve refuses it', async () => {
    const { instanceUuid } = vm;
    // Stopped for longer than a retry interval during the upload: the shelve completes.
    const shelve = await startShelve(stack, instanceUuid);
    await midTransfer(shelve, 'upload');
    await stopService('glance');
    await sleep(5000);
    await startStack();
    const offloaded = (await shelve.result()) as Instance;

    expect(offloaded, 'after the shelve').toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    await expectSingleSnapshot(stack, vm);

    // Serving a corrupted image: the unshelve refuses it, the instance stays SHELVED_OFFLOADED.
    const imageId = (await getInstance(stack.pool, instanceUuid)).systemMetadata.shelved_image_id!;
    // One flipped byte in Glance's own copy (its filesystem store), behind its back.
    const stored = await open(path.join(stackDir, 'glance', 'images', imageId), 'r+');
    const byte = Buffer.alloc(1);
    await stored.read(byte, 0, 1, 1024 * 1024);
    byte[0] = byte[0]! ^ 0xff;
    await stored.write(byte, 0, 1, 1024 * 1024);
    await stored.close();

    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    const error = (await unshelve.result().catch((failure: unknown) => failure)) as WorkflowFailedError;
    expect(error, 'the unshelve').toBeInstanceOf(WorkflowFailedError);
    expect(error.cause, 'the unshelve').toMatchObject({ type: 'ImageCorrupt' });
    expect(error.cause?.message, 'the unshelve').toMatch(new RegExp(`^Image ${imageId} failed verification`));

    expect(await getInstance(stack.pool, instanceUuid), 'after the unshelve').toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
    });
    expect(await stack.libvirt.lookupInstance(instanceUuid), 'the domain after the unshelve').toBeNull();
    expect(await stack.glance.getImage(e2eOwner, imageId), 'the snapshot after the unshelve').toMatchObject({
      status: 'active',
    });
    const [unshelveAction] = await listInstanceActions(stack.pool, instanceUuid);
    expect(unshelveAction, 'the unshelve action').toMatchObject({ action: 'unshelve', message: 'Error' });
  }, 300_000);
});
