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

  it('stopped during the snapshot upload for longer than a retry interval: the shelve completes', async () => {
    const { instanceUuid } = vm;
    const handle = await startShelve(stack, instanceUuid);
    await midTransfer(handle, 'upload');
    await stopService('glance');
    await sleep(5000);
    await startStack();
    const instance = (await handle.result()) as Instance;

    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    await expectSingleSnapshot(stack, vm);
  });

  it('serving a corrupted image: the unshelve refuses it, the instance stays SHELVED_OFFLOADED', async () => {
    const { instanceUuid } = vm;
    const imageId = (await getInstance(stack.pool, instanceUuid)).systemMetadata.shelved_image_id!;
    // One flipped byte in Glance's own copy (its filesystem store), behind its back.
    const stored = await open(path.join(stackDir, 'glance', 'images', imageId), 'r+');
    const byte = Buffer.alloc(1);
    await stored.read(byte, 0, 1, 1024 * 1024);
    byte[0] = byte[0]! ^ 0xff;
    await stored.write(byte, 0, 1, 1024 * 1024);
    await stored.close();

    const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    const error = (await handle.result().catch((failure: unknown) => failure)) as WorkflowFailedError;
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(error.cause).toMatchObject({ type: 'ImageCorrupt' });
    expect(error.cause?.message).toMatch(new RegExp(`^Image ${imageId} failed verification`));

    expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
    });
    expect(await stack.libvirt.lookupInstance(instanceUuid)).toBeNull();
    expect(await stack.glance.getImage(e2eOwner, imageId)).toMatchObject({ status: 'active' });
    const [unshelve] = await listInstanceActions(stack.pool, instanceUuid);
    expect(unshelve).toMatchObject({ action: 'unshelve', message: 'Error' });
  });
});
