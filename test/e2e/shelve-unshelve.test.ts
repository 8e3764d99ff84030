// End to end on the real stack: Temporal, PostgreSQL, libvirt with QEMU, Glance.
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../activities/database.js';
import { instanceDirectory, rootDiskPath } from '../../activities/compute.js';
import { type Action, startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { sameGuestContent } from '../../lib/qemu-img.js';
import { createSampleDisk, type SampleDisk, uploadBootImage } from '../../lib/sample-disk.js';
import { guestWrite, startTestStack, type TestStack } from '../support/stack.js';

const owner = { projectId: 'e2e-project', userId: 'e2e-user' };
const flavor = { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 };

describe('shelve, offload and unshelve of a VM on the real stack', () => {
  let stack: TestStack;
  let disk: SampleDisk;
  let bootImageId: string;
  const instanceUuid = randomUUID();
  const displayName = `e2e-${instanceUuid.slice(0, 8)}`;
  let shelvedImageId: string;

  async function run<A extends Action>(action: A, input: Parameters<typeof startAction<A>>[3]): Promise<Instance> {
    const handle = await startAction(stack.client, stack.config, action, input);
    return (await handle.result()) as Instance;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    disk = await createSampleDisk(path.join(tmpdir(), 'vm-shelve-e2e'), instanceUuid);
    bootImageId = await uploadBootImage(stack.glance, owner, disk.image, { id: randomUUID(), name: 'e2e-boot' });
    const host = stack.config.compute.host;
    await run('build', { instanceUuid, displayName, ...owner, imageRef: bootImageId, flavor, host });
    // The guest writes random data past the boot image's own bytes: it lives only in the overlay.
    const written = randomBytes(4 * 1024 * 1024);
    const offset = 40 * 1024 * 1024;
    await guestWrite(stack.config, instanceUuid, offset, written);
    const reference = await open(disk.reference, 'r+');
    await reference.write(written, 0, written.length, offset);
    await reference.close();
  });

  afterAll(async () => {
    await stack?.destroyInstance(instanceUuid);
    if (bootImageId) await stack.glance.deleteImage(owner, bootImageId);
    await stack?.stop();
  });

  it('built the VM running, its disk holding the known bytes', async () => {
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host: stack.config.compute.host,
    });
    const domain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await domain!.getInfo()).state).toBe(DomainState.RUNNING);
    expect(await sameGuestContent(disk.reference, rootDiskPath(stack.config.compute.instancesPath, instanceUuid))).toBe(
      true,
    );
  });

  it('shelves and offloads: domain and files gone, image active with its properties, metadata recorded', async () => {
    const instance = await run('shelve', { instanceUuid, shutdownTimeout: 1, shelvedOffloadTime: 0 });

    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, powerState: 4, host: null });
    const metadata = (await getInstance(stack.pool, instanceUuid)).systemMetadata;
    expect(metadata.shelved_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/);
    expect(metadata.shelved_host).toBe(stack.config.compute.host);
    expect(metadata.image_base_image_ref).toBe(bootImageId);
    shelvedImageId = metadata.shelved_image_id!;

    expect(await stack.libvirt.lookupInstance(instanceUuid)).toBeNull();
    expect(existsSync(instanceDirectory(stack.config.compute.instancesPath, instanceUuid))).toBe(false);

    const image = await stack.glance.getImage(owner, shelvedImageId);
    expect(image).toMatchObject({
      status: 'active',
      name: `${displayName}-shelved`,
      owner: owner.projectId,
      visibility: 'private',
      disk_format: 'qcow2',
      container_format: 'bare',
      image_type: 'snapshot',
      image_location: 'snapshot',
      image_state: 'available',
      instance_uuid: instanceUuid,
      user_id: owner.userId,
      owner_id: owner.projectId,
      base_image_ref: bootImageId,
      instance_type_name: 'm1.tiny',
      instance_type_memory_mb: '128',
      instance_type_vcpus: '1',
      instance_type_root_gb: '1',
      // Inherited from the boot image's properties.
      os_type: 'linux',
      hw_disk_bus: 'virtio',
    });
  });

  it('unshelves: domain running, image deleted, metadata cleared, the same guest-visible bytes', async () => {
    const instance = await run('unshelve', { instanceUuid });

    expect(instance).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host: stack.config.compute.host,
    });
    for (const key of ['shelved_at', 'shelved_image_id', 'shelved_host'])
      expect(instance.systemMetadata).not.toHaveProperty(key);
    const domain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await domain!.getInfo()).state).toBe(DomainState.RUNNING);
    expect(await stack.glance.getImage(owner, shelvedImageId)).toBeNull();
    expect(await sameGuestContent(disk.reference, rootDiskPath(stack.config.compute.instancesPath, instanceUuid))).toBe(
      true,
    );
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
