// An operator terminating an action in the middle (`temporal workflow terminate`): no code of it
// runs again, so no rollback either. One run of the reconciler settles what it left: the claim
// released as the rollback would have, no half-made image, no half-built domain; the bytes are
// intact and the next actions succeed. And the reconciler's power state sync sees a guest
// destroyed behind the project's back.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { ensureReconcileSchedule } from '../../lib/reconcile-schedule.js';
import { domainName } from '../../lib/libvirt.js';
import type { Instance } from '../../lib/nova.js';
import { createSampleDisk, removeSampleDisk, uploadBootImage } from '../../lib/sample-disk.js';
import { expectSingleSnapshot, midTransfer, reconcileNow, startShelve, expectOffHost } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('an action terminated by an operator, then one reconcile', () => {
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

  async function terminate(handle: WorkflowHandle): Promise<void> {
    await handle.terminate('test: an operator terminates');
  }

  async function lastAction(instanceUuid: string) {
    return (await listInstanceActions(stack.pool, instanceUuid))[0];
  }

  const releasedBecause = (workflowId: string) => `released by the reconciler: workflow ${workflowId} was TERMINATED`;

  it('a shelve mid-upload: ACTIVE again, its guest as libvirt shows it, no image left', async () => {
    const handle = await startShelve(stack, vm.instanceUuid);
    await midTransfer(handle, 'upload');
    await terminate(handle);
    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({ taskState: 'shelving_image_uploading' });

    expect(await reconcileNow(stack, [vm.instanceUuid])).toEqual({
      claimsReleased: 1,
      powerStatesSynced: 0,
      imagesDeleted: 1,
      failures: 0,
    });
    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 4,
      host: stack.config.compute.host,
    });
    expect(await stack.glance.listImages(e2eOwner, { name: `${vm.displayName}-shelved` })).toEqual([]);
    expect(await lastAction(vm.instanceUuid)).toMatchObject({
      action: 'shelve',
      message: 'Error',
      reason: releasedBecause(handle.workflowId),
    });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });

  it('an unshelve mid-download: offloaded again, no domain or file left, the snapshot kept', async () => {
    const shelve = await startShelve(stack, vm.instanceUuid);
    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded' });
    const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    await midTransfer(handle, 'download');
    await terminate(handle);

    expect(await reconcileNow(stack, [vm.instanceUuid])).toEqual({
      claimsReleased: 1,
      powerStatesSynced: 0,
      imagesDeleted: 0,
      failures: 0,
    });
    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
    });
    await expectOffHost(stack, vm.instanceUuid);
    await expectSingleSnapshot(stack, vm);
    expect(await lastAction(vm.instanceUuid)).toMatchObject({
      action: 'unshelve',
      message: 'Error',
      reason: releasedBecause(handle.workflowId),
    });

    const again = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    expect((await again.result()) as Instance).toMatchObject({ vmState: 'active', taskState: null });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });

  it('a build mid-spawn: ERROR and off its host, no domain or file left, and it can be deleted', async () => {
    const instanceUuid = randomUUID();
    const disk = await createSampleDisk(path.join(tmpdir(), 'vm-shelve-e2e'), instanceUuid, 1024);
    const imageRef = await uploadBootImage(stack.glance, e2eOwner, disk.image, { id: randomUUID(), name: 'e2e-boot' });
    try {
      const handle = await startAction(stack.client, stack.config, 'build', {
        instanceUuid,
        displayName: `e2e-${instanceUuid.slice(0, 8)}`,
        ...e2eOwner,
        imageRef,
        flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
        host: stack.config.compute.host,
      });
      await midTransfer(handle, 'download');
      await terminate(handle);

      expect(await reconcileNow(stack, [instanceUuid])).toEqual({
        claimsReleased: 1,
        powerStatesSynced: 0,
        imagesDeleted: 0,
        failures: 0,
      });
      expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({
        vmState: 'error',
        taskState: null,
        host: null,
      });
      await expectOffHost(stack, instanceUuid);
      expect(await lastAction(instanceUuid)).toMatchObject({
        action: 'create',
        message: 'Error',
        reason: releasedBecause(handle.workflowId),
      });

      await (await startAction(stack.client, stack.config, 'delete', { instanceUuid })).result();
      await expect(getInstance(stack.pool, instanceUuid)).rejects.toThrow(/could not be found/);
    } finally {
      await stack.pool.query('DELETE FROM instances WHERE uuid = $1', [instanceUuid]);
      await stack.glance.deleteImage(e2eOwner, imageRef);
      await rm(path.join(stack.config.compute.instancesPath, '_base', imageRef), { force: true });
      await removeSampleDisk(disk);
    }
  });

  it('syncs the power state of a guest destroyed behind its back, and the next shelve and unshelve succeed', async () => {
    // A small VM of its own: the large one may have been left powered off by a terminated shelve.
    const guest = await buildKnownVm(stack, stack.config.compute.host);
    try {
      expect(await getInstance(stack.pool, guest.instanceUuid)).toMatchObject({ vmState: 'active', powerState: 1 });
      await promisify(execFile)('virsh', [
        '-c',
        stack.config.compute.libvirtUri,
        'destroy',
        domainName(guest.instanceUuid),
      ]);

      expect(await reconcileNow(stack, [guest.instanceUuid])).toEqual({
        claimsReleased: 0,
        powerStatesSynced: 1,
        imagesDeleted: 0,
        failures: 0,
      });
      // Nova's sync changes the power state only: the vm_state is the user's to act on.
      expect(await getInstance(stack.pool, guest.instanceUuid)).toMatchObject({
        vmState: 'active',
        taskState: null,
        powerState: 4,
      });

      const shelve = await startShelve(stack, guest.instanceUuid);
      expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null });
      const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: guest.instanceUuid });
      expect((await unshelve.result()) as Instance).toMatchObject({
        vmState: 'active',
        taskState: null,
        powerState: 1,
      });
      expect(await guest.diskIsIntact(stack.config)).toBe(true);
    } finally {
      await guest.remove();
    }
  });

  it('the conductor makes the reconciler schedule, and brings it to the configured interval when it exists', async () => {
    // A schedule of this test's own, paused at once so that it never acts on other tests' instances.
    const scheduleId = `reconciler-test-${randomUUID()}`;
    await ensureReconcileSchedule(stack.client, { ...stack.config, reconcileInterval: 3600 }, scheduleId);
    const handle = stack.client.schedule.getHandle(scheduleId);
    try {
      await handle.pause('test: not to run');
      await ensureReconcileSchedule(stack.client, { ...stack.config, reconcileInterval: 1800 }, scheduleId);
      const schedule = await handle.describe();
      expect(schedule.spec.intervals?.map((interval) => interval.every)).toEqual([1800_000]);
      expect(schedule.policies.overlap).toBe('SKIP');
      expect(schedule.action).toMatchObject({
        type: 'startWorkflow',
        workflowType: 'reconcileInstances',
        taskQueue: stack.config.temporal.conductorTaskQueue,
      });
    } finally {
      await handle.delete();
    }
  });
});
