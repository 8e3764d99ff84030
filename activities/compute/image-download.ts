// Images from Glance onto the host, for a spawn: each download verified against the hash Glance
// records (or the shelve stored) and inspected before anything opens it; boot images cached.
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import {
  checkImage,
  ImageFormatError,
  type InspectedImage,
  imageRefusal,
  inspectImageFile,
} from '../../lib/format-inspector.js';
import type { GlanceImage, RequestContext } from '../../lib/glance.js';
import { checkedId, FILE_MODE, FOLDER_MODE } from '../../lib/host-paths.js';
import { expectedHash, ImageDigest } from '../../lib/image-hash.js';
import { bytesMoved } from '../../lib/metrics.js';
import type { Instance } from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';
import { byteProgress } from './heartbeat.js';
import { type ComputeServices, failWhenDiskFull } from './services.js';

/**
 * Downloads write the socket's own small chunks; a buffer larger than Node's default 64 KiB only
 * lets the disk fall behind less.
 */
const DOWNLOAD_WRITE_BUFFER = 8 * 1024 * 1024;

/** The image's record; an image the context cannot see is not found. */
export async function requireImage(
  { glance }: ComputeServices,
  context: RequestContext,
  imageId: string,
): Promise<GlanceImage> {
  const image = await glance.getImage(context, imageId);
  if (!image) {
    throw ApplicationFailure.create({
      type: 'ImageNotFound',
      message: `Image ${imageId} could not be found.`,
      nonRetryable: true,
    });
  }
  return image;
}

/**
 * Checks an image file before anything else opens it: its bytes must be the format Glance
 * records, one the project supports, with nothing that names another file, and no larger than
 * the disk it is to become (lib/format-inspector.ts).
 */
async function checkedImageFile(file: string, image: GlanceImage, maxVirtualSize?: number): Promise<InspectedImage> {
  try {
    return checkImage(await inspectImageFile(file), { diskFormat: image.disk_format, maxVirtualSize });
  } catch (error) {
    if (!(error instanceof ImageFormatError)) throw error;
    throw ApplicationFailure.create({
      type: 'ImageUnacceptable',
      message: imageRefusal(image.id, image.disk_format, error),
      nonRetryable: true,
    });
  }
}

/**
 * Streams an image from Glance into `file` through `partial`, refusing it when its hash is not
 * the one Glance records (or, for a shelve snapshot, the one the shelve stored) or its bytes fail
 * the image checks. Nothing of a refused image stays on the host.
 */
export async function download(
  { config, glance }: ComputeServices,
  image: GlanceImage,
  context: RequestContext,
  file: string,
  {
    partial = `${file}.part`,
    maxVirtualSize,
    stored = null,
  }: {
    partial?: string;
    maxVirtualSize?: number;
    stored?: Pick<UploadedSnapshot, 'osHashAlgo' | 'osHashValue'> | null;
  },
): Promise<InspectedImage> {
  const imageId = image.id;
  const expected = stored ? { algorithm: stored.osHashAlgo, value: stored.osHashValue } : expectedHash(image);
  const digest = new ImageDigest(expected?.algorithm ?? 'sha512', byteProgress('download', image.size ?? undefined));
  const { cancellationSignal } = Context.current();
  await pipeline(
    await glance.downloadImageData(context, imageId, cancellationSignal),
    digest,
    createWriteStream(partial, { highWaterMark: DOWNLOAD_WRITE_BUFFER, mode: FILE_MODE }),
    { signal: cancellationSignal },
  ).catch(async (error: unknown) => {
    await rm(partial, { force: true });
    return failWhenDiskFull(config, `image ${imageId}`)(error);
  });
  const { osHashValue, bytes } = digest.result();
  if (expected && expected.value !== osHashValue) {
    await rm(partial, { force: true });
    throw ApplicationFailure.create({
      type: 'ImageCorrupt',
      message: `Image ${imageId} failed verification: ${bytes} bytes received with ${expected.algorithm} ${osHashValue.slice(0, 16)}…, ${stored ? 'the shelve stored' : 'Glance records'} ${expected.value.slice(0, 16)}…`,
      nonRetryable: true,
    });
  }
  const inspected = await checkedImageFile(partial, image, maxVirtualSize).catch(async (error: unknown) => {
    await rm(partial, { force: true });
    throw error;
  });
  await rename(partial, file);
  bytesMoved.inc({ direction: 'download' }, bytes);
  return inspected;
}

/**
 * The boot image in this host's cache, downloaded the first time. A cached file is checked again
 * on every use: the limit on its size is each spawn's own.
 */
export async function cachedImage(
  services: ComputeServices,
  owner: Instance,
  imageId: string,
  maxVirtualSize: number | undefined,
): Promise<{ path: string } & InspectedImage> {
  const base = path.join(services.config.instancesPath, '_base', checkedId('image', imageId));
  await mkdir(path.dirname(base), { recursive: true, mode: FOLDER_MODE });
  const image = await requireImage(services, owner, imageId);
  const cached = await stat(base).then(
    () => true,
    () => false,
  );
  // Spawns of one image on one host may race to cache it: each downloads into a file of its
  // own, and the atomic rename leaves a whole image either way.
  const inspected = cached
    ? await checkedImageFile(base, image, maxVirtualSize)
    : await download(services, image, owner, base, { partial: `${base}.${randomUUID()}.part`, maxVirtualSize });
  return { path: base, ...inspected };
}
