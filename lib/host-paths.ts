// Where an instance's files live on its compute host, and their removal: used by the compute
// activities, the host's cleanup at start, and the tests, bench and demo that look at the disks.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { type Domain, DomainState } from '@unraid/libvirt';
import type { Config } from './config.js';
import { removeDhcpHosts } from './host-network.js';
import { type Instance, isUuid, rootVolume } from './nova.js';

/**
 * Instance files are the guests' data: only their owner (root, or the guest's QEMU while libvirt
 * lends it the file) reads them. Folders let QEMU pass through to the files libvirt lends it.
 */
export const FILE_MODE = 0o600;
export const FOLDER_MODE = 0o711;

/** Ids become path components: only a uuid may. */
export function checkedId(kind: string, id: string): string {
  if (!isUuid(id)) {
    throw ApplicationFailure.create({
      type: 'InvalidId',
      message: `${kind} id '${id}' is not a UUID`,
      nonRetryable: true,
    });
  }
  return id.toLowerCase();
}

/** The folder holding an instance's files on its host. */
export function instanceDirectory(instancesPath: string, instanceUuid: string): string {
  return path.join(instancesPath, checkedId('instance', instanceUuid));
}

/** An instance's root disk on its host. */
export function rootDiskPath(instancesPath: string, instanceUuid: string): string {
  return path.join(instanceDirectory(instancesPath, instanceUuid), 'disk');
}

/** What the instance's guest printed on its serial console (libvirt's log of it, as Nova's). */
export function consoleLogPath(instancesPath: string, instanceUuid: string): string {
  return path.join(instanceDirectory(instancesPath, instanceUuid), 'console.log');
}

/** A volume's name in the storage pool. */
export function volumeName(volumeId: string): string {
  return `volume-${checkedId('volume', volumeId)}`;
}

/** The file holding an instance's root disk: its volume's, or the one in its instance folder. */
export function rootDiskFile(compute: Config['compute'], instance: Pick<Instance, 'uuid' | 'blockDeviceMappings'>) {
  const volume = rootVolume(instance);
  return volume?.volumeId
    ? path.join(compute.volumePool.path, volumeName(volume.volumeId))
    : rootDiskPath(compute.instancesPath, instance.uuid);
}

/**
 * Stops the instance's domain, removes its ports' DHCP entries, undefines it and removes the
 * instance's files from this host; its volumes stay in their pool. The destroyInstance activity, the host's cleanup at start and the
 * tests' clean-up all call it.
 */
export async function removeInstanceFromHost(
  compute: Pick<Config['compute'], 'instancesPath' | 'libvirtUri'>,
  instanceUuid: string,
  domain: Domain | null,
  onStep: (step: string) => void = () => undefined,
): Promise<void> {
  if (domain) {
    onStep('destroying the domain');
    if ((await domain.getInfo()).state !== DomainState.SHUTOFF) await domain.destroy();
    // Read from the domain, the one record of what this host serves the instance's ports.
    await removeDhcpHosts(compute.libvirtUri, await domain.getXMLDesc());
    await domain.undefine();
  }
  onStep('removing instance files');
  await rm(instanceDirectory(compute.instancesPath, instanceUuid), { recursive: true, force: true });
}
