// End to end on the real stack: Temporal, PostgreSQL, libvirt with QEMU, Glance.
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instanceDirectory } from '../../lib/host-paths.js';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { type Action, startAction } from '../../lib/actions.js';
import { bytesMoved } from '../../lib/metrics.js';
import type { Instance } from '../../lib/nova.js';
import { sameGuestContent } from '../../lib/qemu-img.js';
import { expectOffHost } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { guestWrite, startTestStack, type TestStack } from '../support/stack.js';

describe('shelve, offload and unshelve of a VM on the real stack', () => {
  let stack: TestStack;
  let vm: KnownVm;
  let instanceUuid: string;

  async function run<A extends Action>(action: A, input: Parameters<typeof startAction<A>>[3]): Promise<Instance> {
    const handle = await startAction(stack.client, stack.config, action, input);
    return (await handle.result()) as Instance;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host, { flavor: { ephemeralGb: 1, swap: 64 } });
    instanceUuid = vm.instanceUuid;
    await guestWrite(stack.config, instanceUuid, 0, ephemeralData, 1);
  });

  // What the guest wrote to its ephemeral disk (vdb): lost at offload, as in Nova, kept in place.
  const ephemeralData = randomBytes(1024 * 1024);
  const ephemeralDisk = () =>
    path.join(instanceDirectory(stack.config.compute.instancesPath, instanceUuid), 'disk.eph0');
  async function ephemeralHolds(data: Buffer | null): Promise<boolean> {
    const reference = path.join(tmpdir(), `vm-shelve-eph-${instanceUuid}.raw`);
    const file = await open(reference, 'w');
    await file.truncate(1024 ** 3);
    if (data) await file.write(data, 0, data.length, 0);
    await file.close();
    try {
      return await sameGuestContent(reference, ephemeralDisk());
    } finally {
      await rm(reference);
    }
  }

  afterAll(async () => {
    await vm?.remove();
    await stack?.stop();
  });

  // One journey on one VM: each step starts from where the previous one left it.
  it('builds the VM, shelves and offloads it, unshelves it, logs both, then shelves and unshelves it in place', async () => {
    const built = await getInstance(stack.pool, instanceUuid);
    expect(built, 'after the build').toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host: stack.config.compute.host,
    });
    const builtDomain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await builtDomain!.getInfo()).state, 'after the build').toBe(DomainState.RUNNING);
    expect(await vm.diskIsIntact(stack.config), 'after the build').toBe(true);
    expect(await ephemeralHolds(ephemeralData), 'after the build').toBe(true);
    expect(existsSync(ephemeralDisk().replace('disk.eph0', 'disk.swap')), 'after the build').toBe(true);

    // Shelve and offload: domain and files gone, image active with its properties, metadata recorded.
    const offloaded = await run('shelve', { instanceUuid, shutdownTimeout: 1, shelvedOffloadTime: 0 });
    expect(offloaded, 'after the shelve').toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      powerState: 4,
      host: null,
    });
    const metadata = (await getInstance(stack.pool, instanceUuid)).systemMetadata;
    expect(metadata.shelved_at, 'after the shelve').toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/);
    expect(metadata.shelved_host, 'after the shelve').toBe(stack.config.compute.host);
    expect(metadata.image_base_image_ref, 'after the shelve').toBe(vm.bootImageId);
    const shelvedImageId = metadata.shelved_image_id!;

    await expectOffHost(stack, instanceUuid, 'after the shelve');

    const image = await stack.glance.getImage(e2eOwner, shelvedImageId);
    expect(image, 'the shelve snapshot').toMatchObject({
      status: 'active',
      name: `${vm.displayName}-shelved`,
      // The service's, protected: no tenant can upload into it or delete it (docs/security.md, The snapshot).
      owner: stack.glance.snapshotContext.projectId,
      protected: true,
      visibility: 'private',
      disk_format: 'qcow2',
      container_format: 'bare',
      image_type: 'snapshot',
      image_location: 'snapshot',
      image_state: 'available',
      instance_uuid: instanceUuid,
      user_id: e2eOwner.userId,
      owner_id: e2eOwner.projectId,
      base_image_ref: vm.bootImageId,
      instance_type_name: 'm1.tiny',
      instance_type_memory_mb: '128',
      instance_type_vcpus: '1',
      instance_type_root_gb: '1',
      // Inherited from the boot image's properties.
      os_type: 'linux',
      hw_disk_bus: 'virtio',
    });

    // Unshelve: domain running, image deleted, metadata cleared, the same guest-visible bytes.
    const unshelved = await run('unshelve', { instanceUuid });
    expect(unshelved, 'after the unshelve').toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host: stack.config.compute.host,
    });
    for (const key of ['shelved_at', 'shelved_image_id', 'shelved_host']) {
      expect(unshelved.systemMetadata, 'after the unshelve').not.toHaveProperty(key);
    }
    const unshelvedDomain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await unshelvedDomain!.getInfo()).state, 'after the unshelve').toBe(DomainState.RUNNING);
    expect(await stack.glance.getImage(e2eOwner, shelvedImageId), 'after the unshelve').toBeNull();
    expect(await vm.diskIsIntact(stack.config), 'after the unshelve').toBe(true);
    // The compute host counted what it moved: the snapshot up, then down again.
    const moved = Object.fromEntries((await bytesMoved.get()).values.map((v) => [v.labels.direction, v.value]));
    expect(moved.upload, 'bytes uploaded').toBeGreaterThan(32 * 1024 * 1024);
    expect(moved.download, 'bytes downloaded').toBeGreaterThanOrEqual(moved.upload!);
    // Only the root disk is shelved: the ephemeral disk comes back empty.
    expect(await ephemeralHolds(null), 'after the unshelve').toBe(true);

    // The actions log: each action with its steps, who asked and how each ended.
    const actions = await listInstanceActions(stack.pool, instanceUuid);
    const log = actions.map(({ action, message, events }) => ({
      action,
      message,
      events: events.map(({ event, result }) => `${event}:${result}`),
    }));
    expect(log, 'the actions log').toEqual([
      {
        action: 'unshelve',
        message: null,
        events: [
          'get_image_info:Success',
          'schedule_instances:Success',
          'compute_unshelve_instance:Success',
          'delete_snapshot_image:Success',
        ],
      },
      {
        action: 'shelve',
        message: null,
        events: [
          'compute_power_off_instance:Success',
          'create_snapshot_image:Success',
          'compute_snapshot_instance:Success',
          'compute_shelve_offload_instance:Success',
        ],
      },
      {
        action: 'create',
        message: null,
        events: ['schedule_instances:Success', 'compute_build_and_run_instance:Success'],
      },
    ]);
    for (const action of actions) {
      expect(action, `the ${action.action} action`).toMatchObject({
        userId: e2eOwner.userId,
        projectId: e2eOwner.projectId,
      });
      expect(action.finishTime, `the ${action.action} action`).not.toBeNull();
      for (const event of action.events) expect(event.finishTime, `${action.action}: ${event.event}`).not.toBeNull();
    }

    // Shelve without offloading (-1): SHELVED on its host, then unshelved in place with the disks untouched.
    await guestWrite(stack.config, instanceUuid, 0, ephemeralData, 1);
    const shelved = await run('shelve', { instanceUuid, shutdownTimeout: 1, shelvedOffloadTime: -1 });
    expect(shelved, 'after the shelve in place').toMatchObject({
      vmState: 'shelved',
      taskState: null,
      powerState: 4,
      host: stack.config.compute.host,
    });
    const domain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await domain!.getInfo()).state, 'after the shelve in place').toBe(DomainState.SHUTOFF);
    const imageId = shelved.systemMetadata.shelved_image_id!;
    expect((await stack.glance.getImage(e2eOwner, imageId))?.status, 'after the shelve in place').toBe('active');

    const active = await run('unshelve', { instanceUuid });
    expect(active, 'after the unshelve in place').toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host: stack.config.compute.host,
    });
    expect((await domain!.getInfo()).state, 'after the unshelve in place').toBe(DomainState.RUNNING);
    expect(await stack.glance.getImage(e2eOwner, imageId), 'after the unshelve in place').toBeNull();
    expect(active.systemMetadata, 'after the unshelve in place').not.toHaveProperty('shelved_image_id');
    expect(await vm.diskIsIntact(stack.config), 'after the unshelve in place').toBe(true);
    expect(await ephemeralHolds(ephemeralData), 'after the unshelve in place').toBe(true);
  });

  async function expectRefused<A extends Action>(action: A, input: Parameters<typeof startAction<A>>[3]) {
    const handle = await startAction(stack.client, stack.config, action, input);
    const error = await handle.result().then(
      () => expect.unreachable(`${action} should have been refused`),
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(WorkflowFailedError);
    const cause = (error as WorkflowFailedError).cause;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    // Refused by the first attempt: a non-retryable failure is never tried again.
    const history = await handle.fetchHistory();
    const attempts = history.events!.filter((event) => event.activityTaskStartedEventAttributes);
    expect(attempts.map((event) => event.activityTaskStartedEventAttributes!.attempt)).toEqual([1]);
    return cause as ApplicationFailure;
  }

  it('refuses an action from a wrong state at once, naming the instance and the state, changing nothing', async () => {
    const before = await getInstance(stack.pool, instanceUuid);
    const failure = await expectRefused('unshelve', { instanceUuid });
    expect(failure.type).toBe('InstanceInvalidState');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toBe(`Cannot 'unshelve' instance ${instanceUuid} while it is in vm_state active`);
    expect(await getInstance(stack.pool, instanceUuid)).toEqual(before);
  });

  it('refuses an unknown instance at once', async () => {
    const unknown = randomUUID();
    const failure = await expectRefused('shelve', { instanceUuid: unknown });
    expect(failure.type).toBe('InstanceNotFound');
    expect(failure.message).toBe(`Instance ${unknown} could not be found.`);
  });
});
