// The spawn step of a build and an unshelve: the root disk from its source (a cached boot image
// under a qcow2 overlay, the shelve snapshot, or a volume), blank local disks, the domain.
import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Context, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import {
  consoleLogPath,
  FILE_MODE,
  FOLDER_MODE,
  instanceDirectory,
  rootDiskPath,
  volumeName,
} from '../../lib/host-paths.js';
import { ensurePortNetworks } from '../../lib/host-network.js';
import { type DomainDisk, domainRequestId, domainXml, refreshStoragePool } from '../../lib/libvirt.js';
import type { Instance, PowerState } from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';
import * as qemuImg from '../../lib/qemu-img.js';
import { reportProgress } from './heartbeat.js';
import { cachedImage, download, requireImage } from './image-download.js';
import { powerOnInstance } from './power.js';
import { removeFromHost } from './removal.js';
import type { ComputeServices } from './services.js';

/** Where an instance's root disk comes from when it is spawned. */
export type RootDiskSource =
  /** A boot image, cached once under _base and shared by qcow2 overlays (Nova's image cache). */
  | { kind: 'overlay'; imageId: string }
  /** The instance's shelve snapshot: deleted from Glance right after, so it becomes its own disk. */
  | { kind: 'standalone'; imageId: string; snapshot: Pick<UploadedSnapshot, 'osHashAlgo' | 'osHashValue'> | null }
  /** A volume in the storage pool; made from `imageId` when it does not exist yet. */
  | { kind: 'volume'; volumeId: string; imageId: string | null; sizeGb: number };

export interface SpawnRequest {
  instance: Instance;
  root: RootDiskSource;
  /** The action's request: written into the domain, which later requests then never reuse. */
  requestId: string;
}

/**
 * The largest virtual size an image may have to become a disk of `size` bytes; none for a size of
 * 0, which takes the image's own size (Nova's rule for a flavor of root_gb 0).
 */
function sizeLimit(size: number): number | undefined {
  return size > 0 ? size : undefined;
}

/** A file qemu-img made, readable by its owner only. */
async function privateFile(file: string): Promise<string> {
  await chmod(file, FILE_MODE);
  return file;
}

async function prepareRootDisk(
  services: ComputeServices,
  instance: Instance,
  root: RootDiskSource,
): Promise<DomainDisk> {
  const { config, glance } = services;
  const rootSize = instance.flavor.rootGb * 1024 ** 3;
  const maxVirtualSize = sizeLimit(rootSize);
  if (root.kind === 'standalone') {
    const file = rootDiskPath(config.instancesPath, instance.uuid);
    const image = await requireImage(services, glance.snapshotContext, root.imageId);
    const { format } = await download(services, image, glance.snapshotContext, file, {
      maxVirtualSize,
      stored: root.snapshot,
    });
    return { type: 'file', path: file, format };
  }
  if (root.kind === 'overlay') {
    const file = rootDiskPath(config.instancesPath, instance.uuid);
    const base = await cachedImage(services, instance, root.imageId, maxVirtualSize);
    await rm(file, { force: true });
    await qemuImg.createOverlay(file, base.path, base.format, Math.max(rootSize, base.virtualSize));
    await privateFile(file);
    return { type: 'file', path: file, format: 'qcow2', backing: { path: base.path, format: base.format } };
  }
  const volume = volumeName(root.volumeId);
  const file = path.join(config.volumePool.path, volume);
  if (!(await stat(file).catch(() => null))) {
    if (!root.imageId) {
      throw ApplicationFailure.create({
        type: 'VolumeNotFound',
        message: `Volume ${root.volumeId} of instance ${instance.uuid} is not in pool ${config.volumePool.name}.`,
        nonRetryable: true,
      });
    }
    const volumeSize = root.sizeGb * 1024 ** 3;
    const base = await cachedImage(services, instance, root.imageId, sizeLimit(volumeSize));
    const part = `${file}.part`;
    reportProgress({ step: 'creating volume' });
    await qemuImg.convert(base.path, base.format, part, 'qcow2', { signal: Context.current().cancellationSignal });
    await qemuImg.resize(await privateFile(part), 'qcow2', Math.max(volumeSize, base.virtualSize));
    await rename(part, file);
    await refreshStoragePool(config.libvirtUri, config.volumePool.name);
  }
  // The project makes every volume, as qcow2.
  return { type: 'volume', pool: config.volumePool.name, volume, format: 'qcow2' };
}

/**
 * The flavor's ephemeral and swap disks, made blank: only the root disk is shelved, so after an
 * offload they come back empty, as in Nova.
 */
async function blankLocalDisks(instancesPath: string, instance: Instance): Promise<DomainDisk[]> {
  const { ephemeralGb, swap } = instance.flavor;
  const wanted = [
    { name: 'disk.eph0', size: ephemeralGb * 1024 ** 3 },
    { name: 'disk.swap', size: swap * 1024 ** 2 },
  ].filter((disk) => disk.size > 0);
  const disks: DomainDisk[] = [];
  for (const { name, size } of wanted) {
    const file = path.join(instanceDirectory(instancesPath, instance.uuid), name);
    await qemuImg.createBlank(file, size);
    await privateFile(file);
    disks.push({ type: 'file', path: file, format: 'qcow2' });
  }
  return disks;
}

/**
 * Prepares the instance's root disk, defines its domain, sets up its ports' networks on this host
 * and starts it. A domain an earlier
 * attempt of this request defined is started as it is; one any other request left (a given-up
 * spawn, a rollback that never reached this host) is removed with its files first, so that a
 * stale guest never runs in the instance's place.
 */
export async function spawnInstance(
  services: ComputeServices,
  { instance, root, requestId }: SpawnRequest,
): Promise<PowerState> {
  const { config, libvirt } = services;
  const { cancellationSignal } = Context.current();
  const existing = await libvirt.lookupInstance(instance.uuid);
  const ours = existing !== null && domainRequestId(await existing.getXMLDesc()) === requestId;
  if (!ours) {
    if (existing) {
      log.warn('removing a domain another request defined', { instanceUuid: instance.uuid, requestId });
      await removeFromHost(services, instance.uuid, existing);
    }
    await mkdir(instanceDirectory(config.instancesPath, instance.uuid), { recursive: true, mode: FOLDER_MODE });
    reportProgress({ step: 'preparing the root disk' });
    const disk = await prepareRootDisk(services, instance, root);
    const localDisks = await blankLocalDisks(config.instancesPath, instance);
    cancellationSignal.throwIfAborted();
    reportProgress({ step: 'defining the domain' });
    const hypervisor = await libvirt.open();
    await hypervisor.domainDefineXML(
      domainXml(instance, disk, config.virtType, {
        localDisks,
        requestId,
        consoleLog: consoleLogPath(config.instancesPath, instance.uuid),
      }),
    );
  }
  // After any removal above, which takes the removed domain's DHCP entries (the same MACs) away.
  reportProgress({ step: 'setting up the networks' });
  await ensurePortNetworks(config.libvirtUri, instance.ports);
  cancellationSignal.throwIfAborted();
  reportProgress({ step: 'starting the domain' });
  return powerOnInstance(services, { instanceUuid: instance.uuid });
}
