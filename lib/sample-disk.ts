// A disk image whose guest-visible bytes are known: random data with holes, as a qcow2 to boot
// from and a raw reference to compare with. Used by the demo and the tests.
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { GlanceClient, RequestContext } from './glance.js';
import { convert } from './qemu-img.js';

const MiB = 1024 * 1024;

export interface SampleDisk {
  /** The qcow2 image to upload. */
  image: string;
  /** Raw file with the same guest-visible bytes. */
  reference: string;
}

/** `sizeMiB` of virtual disk: random data in its first and third quarters, zeros elsewhere. */
export async function createSampleDisk(dir: string, name: string, sizeMiB = 64): Promise<SampleDisk> {
  await mkdir(dir, { recursive: true });
  const reference = path.join(dir, `${name}.raw`);
  const file = await open(reference, 'w');
  try {
    await file.truncate(sizeMiB * MiB);
    const quarter = (sizeMiB / 4) * MiB;
    for (const offset of [0, 2 * quarter]) {
      for (let done = 0; done < quarter; done += MiB) await file.write(randomBytes(MiB), 0, MiB, offset + done);
    }
  } finally {
    await file.close();
  }
  const image = path.join(dir, `${name}.qcow2`);
  await convert(reference, 'raw', image, 'qcow2');
  return { image, reference };
}

/** Removes both files: a test's disks are gigabytes, and every run makes new ones. */
export async function removeSampleDisk(disk: SampleDisk): Promise<void> {
  await Promise.all([rm(disk.image, { force: true }), rm(disk.reference, { force: true })]);
}

/** Uploads a qcow2 file to Glance as a private boot image; returns its id. */
export async function uploadBootImage(
  glance: GlanceClient,
  owner: RequestContext,
  file: string,
  { id, name }: { id: string; name: string },
): Promise<string> {
  await glance.createImage(owner, {
    id,
    name,
    owner: owner.projectId,
    visibility: 'private',
    disk_format: 'qcow2',
    container_format: 'bare',
    os_type: 'linux',
    hw_disk_bus: 'virtio',
  });
  const { size } = await stat(file);
  await glance.uploadImageData(owner, id, createReadStream(file), size);
  return id;
}
