// A volume-backed VM on the real stack: its root disk is a volume in a libvirt storage pool.
// Shelve takes no image and offloads at once; the volume stays and comes back at unshelve.
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { rootDiskFile } from '../../lib/host-paths.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { ensureStoragePool } from '../../lib/libvirt.js';
import type { Instance } from '../../lib/nova.js';
import { expectOffHost } from '../support/faults.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('shelve and unshelve of a volume-backed VM', () => {
  let stack: TestStack;
  let vm: KnownVm;
  let volumeFile: string;

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host, { bootVolume: { sizeGb: 1 } });
    volumeFile = rootDiskFile(stack.config.compute, await getInstance(stack.pool, vm.instanceUuid));
  });

  afterAll(async () => {
    if (vm) {
      await vm.remove();
      // The volume outlives its instance by design: the test removes its own.
      await rm(volumeFile, { force: true });
    }
    await stack?.stop();
  });

  it('refuses a volume pool whose name libvirt already gives to another folder', async () => {
    const { name, path } = stack.config.compute.volumePool;
    await expect(
      ensureStoragePool(stack.config.compute.libvirtUri, { name, path: `${path}-elsewhere` }),
    ).rejects.toThrow(
      `libvirt storage pool ${name} holds ${path}, not ${path}-elsewhere: set VOLUME_POOL to another name`,
    );
  });

  // One journey on one VM: each step starts from where the previous one left it.
  it('boots from its volume, shelves straight to SHELVED_OFFLOADED keeping the volume, unshelves onto it', async () => {
    // Booted from its volume, which holds the known bytes.
    const built = await getInstance(stack.pool, vm.instanceUuid);
    expect(built, 'after the build').toMatchObject({ vmState: 'active', imageRef: '' });
    expect(built.blockDeviceMappings, 'after the build').toEqual([
      expect.objectContaining({
        bootIndex: 0,
        sourceType: 'image',
        destinationType: 'volume',
        imageId: vm.bootImageId,
      }),
    ]);
    expect(volumeFile.startsWith(stack.config.compute.volumePool.path), 'the volume file').toBe(true);
    expect(await vm.diskIsIntact(stack.config), 'after the build').toBe(true);

    // Shelved straight to SHELVED_OFFLOADED even with -1, with no image, keeping the volume.
    const shelve = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid: vm.instanceUuid,
      shutdownTimeout: 0,
      shelvedOffloadTime: -1,
    });
    const offloaded = (await shelve.result()) as Instance;
    expect(offloaded, 'after the shelve').toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    for (const key of ['shelved_at', 'shelved_image_id', 'shelved_host']) {
      expect(offloaded.systemMetadata, 'after the shelve').not.toHaveProperty(key);
    }
    await expectOffHost(stack, vm.instanceUuid, 'after the shelve');
    expect(existsSync(volumeFile), 'the volume after the shelve').toBe(true);
    const [shelveAction] = await listInstanceActions(stack.pool, vm.instanceUuid);
    expect(
      shelveAction!.events.map((event) => event.event),
      'the shelve steps',
    ).toEqual(['compute_power_off_instance', 'compute_shelve_offload_instance']);

    // Unshelved onto the same volume, its bytes intact.
    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    expect(await unshelve.result(), 'after the unshelve').toMatchObject({
      vmState: 'active',
      taskState: null,
      host: stack.config.compute.host,
    });
    const domain = await stack.libvirt.lookupInstance(vm.instanceUuid);
    expect((await domain!.getInfo()).state, 'after the unshelve').toBe(DomainState.RUNNING);
    expect(await vm.diskIsIntact(stack.config), 'after the unshelve').toBe(true);
    const [unshelveAction] = await listInstanceActions(stack.pool, vm.instanceUuid);
    expect(
      unshelveAction!.events.map((event) => event.event),
      'the unshelve steps',
    ).toEqual(['schedule_instances', 'compute_unshelve_instance']);
  });
});
