// The snapshot step of a shelve: the powered-off instance's root disk, checked to be one this
// project made, streamed into its queued Glance image (through qemu-img where planSnapshot says).
import { createReadStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Context, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { checkImage, inspectImageFile } from '../../lib/format-inspector.js';
import { checkedId, instanceDirectory, rootDiskPath } from '../../lib/host-paths.js';
import { ImageDigest } from '../../lib/image-hash.js';
import { bytesMoved } from '../../lib/metrics.js';
import { type Instance, isUuid } from '../../lib/nova.js';
import type { Progress, UploadedSnapshot } from '../../lib/progress.js';
import * as qemuImg from '../../lib/qemu-img.js';
import { planSnapshot } from '../../lib/snapshot-method.js';
import { byteProgress, reportProgress } from './heartbeat.js';
import { type ComputeServices, failWhenDiskFull } from './services.js';

/**
 * Disk reads in large pieces: with the default 64 KiB, Node's streams move images at half the
 * speed. Each read allocates a buffer of this size, held until the socket has sent it: 1 MiB keeps
 * the worker's memory flat (8 MiB cost 60 MiB more at the same speed).
 */
const UPLOAD_READ_SIZE = 1024 * 1024;

/** A file that must be a plain image of `format`, naming no other file. */
async function checkOwnFile(file: string, format: string): Promise<void> {
  checkImage(await inspectImageFile(file), { diskFormat: format });
}

/**
 * A root disk's backing chain is the project's own before qemu-img follows it: a standalone
 * qcow2, or a qcow2 overlay (whose header this project wrote) on the instance's image in _base.
 */
async function checkRootDiskChain(instancesPath: string, instance: Instance, disk: string): Promise<void> {
  const refuse = (why: string): never => {
    throw ApplicationFailure.create({
      type: 'InstanceDiskUnacceptable',
      message: `The root disk of instance ${instance.uuid} is not one this project made: ${why}`,
      nonRetryable: true,
    });
  };
  const top = await qemuImg.imageInfo(disk, 'qcow2');
  if (top.dataFile) refuse('it has an external data file');
  if (top.backingFile === null) {
    await checkOwnFile(disk, 'qcow2').catch((error: unknown) => refuse(String((error as Error).message)));
    return;
  }
  const base = path.join(instancesPath, '_base', instance.imageRef);
  if (!isUuid(instance.imageRef) || top.backingFile !== base)
    refuse(`its backing file is ${top.backingFile}, not ${base}`);
  if (!top.backingFormat) refuse('its backing file has no recorded format');
  await checkOwnFile(base, top.backingFormat!).catch((error: unknown) =>
    refuse(`its backing file ${base}: ${(error as Error).message}`),
  );
}

/**
 * Streams the powered-off instance's root disk into the queued Glance image, in the form
 * planSnapshot picks for this disk, checking that Glance stored exactly what was sent. Returns
 * the hash Glance must keep showing until the unshelve. A retry sends the disk from its first
 * byte (Glance cannot resume an upload); only an upload an earlier attempt finished is kept.
 */
export async function snapshotInstance(
  { config, glance }: ComputeServices,
  { instance, imageId }: { instance: Instance; imageId: string },
): Promise<UploadedSnapshot> {
  const context = glance.snapshotContext;
  const { heartbeatDetails } = Context.current().info;
  const existing = await glance.getImage(context, imageId);
  if (existing?.status === 'active') {
    // Only an upload of this very activity (an earlier attempt that died after it) counts.
    const uploaded = (heartbeatDetails as Progress | undefined)?.uploaded;
    if (uploaded && existing.os_hash_algo === uploaded.osHashAlgo && existing.os_hash_value === uploaded.osHashValue) {
      return uploaded;
    }
    throw ApplicationFailure.create({
      type: 'ImageUploadMismatch',
      message: `Glance image ${imageId} is active with data this shelve did not send.`,
      nonRetryable: true,
    });
  }
  if (existing && existing.status !== 'queued') {
    // Glance stopped in the middle of an upload keeps the image 'saving' for good, and
    // refuses any other upload into it: only a new image will do.
    throw ApplicationFailure.create({
      type: 'ImageUploadInterrupted',
      message: `Glance image ${imageId} is ${existing.status} after an interrupted upload and takes no new data.`,
      nonRetryable: true,
    });
  }
  const disk = rootDiskPath(config.instancesPath, instance.uuid);
  await checkRootDiskChain(config.instancesPath, instance, disk);
  const plan = await planSnapshot(disk);
  log.info('snapshot method chosen', {
    instanceUuid: instance.uuid,
    method: plan.method,
    sampledRatio: Number(plan.sampledRatio.toFixed(3)),
    chain: plan.chain.map((image) => image.file),
  });
  const snapshot = path.join(
    instanceDirectory(config.instancesPath, instance.uuid),
    `snapshot-${checkedId('image', imageId)}.qcow2`,
  );
  const { cancellationSignal } = Context.current();
  try {
    if (plan.method !== 'as-is') {
      const zstd = plan.method === 'flatten-zstd';
      reportProgress({ step: zstd ? 'compressing disk' : 'extracting disk' });
      await qemuImg
        .convert(disk, 'qcow2', snapshot, 'qcow2', { zstd, signal: cancellationSignal })
        .catch(failWhenDiskFull(config, `the snapshot of instance ${instance.uuid}`));
    }
    const source = plan.method === 'as-is' ? disk : snapshot;
    const { size } = await stat(source);
    const digest = new ImageDigest(glance.hashingAlgorithm, byteProgress('upload', size));
    const data = createReadStream(source, { highWaterMark: UPLOAD_READ_SIZE }).pipe(digest);
    await glance.uploadImageData(context, imageId, data, size, cancellationSignal);
    const uploaded = { size, osHashAlgo: glance.hashingAlgorithm, osHashValue: digest.result().osHashValue };
    reportProgress({ step: 'upload', bytesDone: size, bytesTotal: size, uploaded });
    const stored = await glance.getImage(context, imageId);
    if (stored?.status === 'active' && stored.os_hash_algo !== uploaded.osHashAlgo) {
      throw ApplicationFailure.create({
        type: 'GlanceHashingAlgorithmMismatch',
        message: `Glance hashes images with ${stored.os_hash_algo}, not ${uploaded.osHashAlgo}: set GLANCE_HASHING_ALGORITHM=${stored.os_hash_algo} on the compute workers.`,
        nonRetryable: true,
      });
    }
    if (stored?.status !== 'active' || stored.os_hash_value !== uploaded.osHashValue) {
      throw ApplicationFailure.create({
        type: 'ImageUploadMismatch',
        message: `Glance image ${imageId} is ${stored?.status ?? 'missing'} with hash ${stored?.os_hash_value?.slice(0, 16) ?? '-'}… after ${size} bytes were sent with hash ${uploaded.osHashValue.slice(0, 16)}…`,
        nonRetryable: true,
      });
    }
    bytesMoved.inc({ direction: 'upload' }, size);
    log.info('snapshot uploaded', { instanceUuid: instance.uuid, imageId, method: plan.method, bytes: size });
    return uploaded;
  } finally {
    await rm(snapshot, { force: true });
  }
}
