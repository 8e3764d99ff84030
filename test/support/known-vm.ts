// A real VM whose disk holds known random bytes, both from its boot image and written by the
// guest into its qcow2 overlay, with a raw reference file to compare any later disk against.
import { randomBytes, randomUUID } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Config } from '../../lib/config.js';
import { removeInstanceFromHost, rootDiskFile } from '../../lib/host-paths.js';
import type { Flavor } from '../../lib/nova.js';
import { sameGuestContent } from '../../lib/qemu-img.js';
import { createSampleDisk, removeSampleDisk, uploadBootImage } from '../../lib/sample-disk.js';
import { guestWrite, type TestStack } from './stack.js';

export const e2eOwner = { projectId: 'e2e-project', userId: 'e2e-user' };

export interface KnownVm {
  instanceUuid: string;
  displayName: string;
  bootImageId: string;
  /** Raw file holding the guest-visible bytes the VM's disk must show. */
  reference: string;
  /** True when the instance's root disk (on that host, or its volume) shows the reference's bytes. */
  diskIsIntact(hostConfig: Config): Promise<boolean>;
  /**
   * Removes the VM from the host `hostConfig` describes (the stack's own by default): its domain,
   * files and record, its boot image from Glance and the host's image cache, a shelve snapshot
   * it may still have, and its sample disk files.
   */
  remove(hostConfig?: Config): Promise<void>;
}

export async function buildKnownVm(
  stack: TestStack,
  host: string,
  {
    availabilityZone,
    bootVolume,
    flavor,
    sizeMiB,
  }: {
    /** The zone the instance is pinned to, so that an unshelve stays among the host's peers. */
    availabilityZone?: string;
    bootVolume?: { sizeGb: number };
    flavor?: Partial<Flavor>;
    /** The boot image's virtual size (64 MiB by default). */
    sizeMiB?: number;
  } = {},
): Promise<KnownVm> {
  const instanceUuid = randomUUID();
  const displayName = `e2e-${instanceUuid.slice(0, 8)}`;
  const disk = await createSampleDisk(path.join(tmpdir(), 'vm-shelve-e2e'), instanceUuid, sizeMiB);
  const bootImageId = await uploadBootImage(stack.glance, e2eOwner, disk.image, { id: randomUUID(), name: 'e2e-boot' });
  const handle = await startAction(stack.client, stack.config, 'build', {
    instanceUuid,
    displayName,
    ...e2eOwner,
    imageRef: bootImageId,
    flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0, ...flavor },
    host,
    availabilityZone,
    bootVolume,
  });
  await handle.result();

  // The guest writes random data past the boot image's own bytes: it lives only in the overlay.
  const written = randomBytes(4 * 1024 * 1024);
  const offset = 40 * 1024 * 1024;
  await guestWrite(stack.config, instanceUuid, offset, written);
  const reference = await open(disk.reference, 'r+');
  await reference.write(written, 0, written.length, offset);
  await reference.close();

  return {
    instanceUuid,
    displayName,
    bootImageId,
    reference: disk.reference,
    diskIsIntact: async (hostConfig) =>
      sameGuestContent(disk.reference, rootDiskFile(hostConfig.compute, await getInstance(stack.pool, instanceUuid))),
    remove: async (hostConfig = stack.config) => {
      await removeInstanceFromHost(hostConfig.compute, instanceUuid, await stack.libvirt.lookupInstance(instanceUuid));
      // A test may end with the instance offloaded, its snapshot kept for an unshelve.
      const instance = await getInstance(stack.pool, instanceUuid).catch(() => null);
      const shelvedImageId = instance?.systemMetadata.shelved_image_id;
      if (shelvedImageId) await stack.glance.unprotectAndDelete(stack.glance.snapshotContext, shelvedImageId);
      await stack.pool.query('DELETE FROM instances WHERE uuid = $1', [instanceUuid]);
      await stack.glance.deleteImage(e2eOwner, bootImageId);
      await rm(path.join(hostConfig.compute.instancesPath, '_base', bootImageId), { force: true });
      await removeSampleDisk(disk);
    },
  };
}
