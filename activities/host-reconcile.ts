// What a compute host cleans up when its worker starts, before it takes any step (Nova's
// _destroy_evacuated_instances and _init_instance): the domains and files of instances the
// database no longer places on it (deleted while the host was down, moved elsewhere, or left by
// a rollback that never reached it), and image downloads a killed worker left half-written. Then
// the addresses of the instances deleted while it was down are free again.
import type { Dirent } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Pool } from 'pg';
import type { Config } from '../lib/config.js';
import type { LibvirtConnection } from '../lib/libvirt.js';
import { logger } from '../lib/logger.js';
import { isUuid } from '../lib/nova.js';
import { removeInstanceFromHost } from '../lib/host-paths.js';
import { type InstancePlacement, instancePlacements } from '../lib/db/instances.js';
import { releaseDeletedInstancePorts } from '../lib/db/networks.js';

/**
 * A download not written to for this long is a dead worker's: a running one writes every moment.
 * The wait keeps a sweep from taking the file of a download that still runs (a shared _base).
 */
const PARTIAL_DOWNLOAD_AGE_MS = 5 * 60 * 1000;

/** A folder's entries; none before the folder was first made. */
async function folderEntries(folder: string): Promise<Dirent[]> {
  return readdir(folder, { withFileTypes: true }).catch((error: NodeJS.ErrnoException) =>
    error.code === 'ENOENT' ? [] : Promise.reject(error),
  );
}

/** Why this host removes what it holds of an instance, or null when it keeps it. */
export function leftoverReason(host: string, placement: InstancePlacement | undefined): string | null {
  if (!placement) return 'unknown to the database';
  if (placement.deleted) return 'deleted';
  if (placement.host === host) return null;
  // An action may be bringing it here (an unshelve or a build spawning on this host): its own.
  if (placement.taskState !== null) return null;
  return placement.host ? `placed on host ${placement.host}` : 'placed on no host';
}

/**
 * Removes from this host the instances the database does not place on it, and old partial
 * downloads from its image cache. Only the instances with a folder here are judged: spawnInstance
 * makes the folder before it defines the domain, and a removal undefines the domain before the
 * folder goes, so the folders name the domains this host defined (several test hosts share one
 * libvirtd). A volume-backed instance loses its domain only: its volume stays in the pool.
 */
export async function reconcileHost(compute: Config['compute'], libvirt: LibvirtConnection, pool: Pool): Promise<void> {
  const instanceUuids = (await folderEntries(compute.instancesPath))
    // instanceDirectory names folders by lowercase uuid: any other name is not an instance's.
    .filter((entry) => entry.isDirectory() && isUuid(entry.name) && entry.name === entry.name.toLowerCase())
    .map((entry) => entry.name);
  const placements = await instancePlacements(pool, instanceUuids);
  for (const instanceUuid of instanceUuids) {
    const reason = leftoverReason(compute.host, placements.get(instanceUuid));
    if (reason === null) continue;
    await removeInstanceFromHost(compute, instanceUuid, await libvirt.lookupInstance(instanceUuid));
    logger.info({ instanceUuid, host: compute.host, reason }, 'removed a leftover instance from this host');
  }
  // No guest of a deleted instance runs here any more: the addresses a local delete held are free.
  const released = await releaseDeletedInstancePorts(pool, compute.host);
  if (released > 0)
    logger.info({ host: compute.host, ports: released }, 'released the ports of locally deleted instances');
  await removePartialDownloads(compute);
}

/** Removes the `_base/<image-uuid>.<uuid>.part` files nothing has written to for a while. */
async function removePartialDownloads(compute: Config['compute']): Promise<void> {
  const base = path.join(compute.instancesPath, '_base');
  const partial = (await folderEntries(base)).filter((entry) => entry.isFile() && entry.name.endsWith('.part'));
  for (const { name } of partial) {
    const file = path.join(base, name);
    const written = await stat(file).then(
      (info) => info.mtimeMs,
      () => null,
    );
    if (written === null || Date.now() - written < PARTIAL_DOWNLOAD_AGE_MS) continue;
    await rm(file, { force: true });
    logger.info({ imageId: name.split('.')[0], host: compute.host }, 'removed a partial image download from this host');
  }
}
