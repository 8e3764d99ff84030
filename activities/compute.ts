// Activities of a compute host: its libvirt domains and the disks under its instances path.
// They run only on that host's worker (task queue compute@<host>). Each one is idempotent: a
// retry after a crash finds its own half-done work and finishes it.
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Context, log } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { type Domain, DomainState } from '@unraid/libvirt';
import { classifyHostError, isDiskFull } from '../lib/compute-errors.js';
import type { Config } from '../lib/config.js';
import {
  checkImage,
  ImageFormatError,
  type InspectedImage,
  imageRefusal,
  inspectImageFile,
} from '../lib/format-inspector.js';
import { expectedHash, type GlanceClient, type GlanceImage, ImageDigest, type RequestContext } from '../lib/glance.js';
import {
  type DomainDisk,
  domainRequestId,
  domainXml,
  type LibvirtConnection,
  powerStateOf,
  refreshStoragePool,
} from '../lib/libvirt.js';
import { bytesMoved } from '../lib/metrics.js';
import { type Instance, isUuid, PowerState, rootVolume } from '../lib/nova.js';
import * as qemuImg from '../lib/qemu-img.js';
import { planSnapshot } from '../lib/snapshot-method.js';

/**
 * Disk I/O in large pieces: with the default 64 KiB, Node's streams move images at half the
 * speed. Reads for an upload allocate a buffer of this size each, held until the socket has sent
 * it: 1 MiB keeps the worker's memory flat (8 MiB cost 60 MiB more at the same speed). Downloads
 * write the socket's own small chunks; a larger buffer there only lets the disk fall behind less.
 */
const UPLOAD_READ_SIZE = 1024 * 1024;
const DOWNLOAD_WRITE_BUFFER = 8 * 1024 * 1024;

/** What the CLI and the Web UI read from an activity's heartbeat. */
export interface Progress {
  step: string;
  bytesDone?: number;
  bytesTotal?: number;
  /**
   * The hash of what an upload sent, once sent: a retry of the same snapshot finds it here, and
   * accepts an image it finds active only with this hash.
   */
  uploaded?: UploadedSnapshot;
}

/** A snapshot this shelve uploaded, as Glance must have stored it. */
export interface UploadedSnapshot {
  size: number;
  osHashAlgo: string;
  osHashValue: string;
}

/**
 * Instance files are the guests' data: only their owner (root, or the guest's QEMU while libvirt
 * lends it the file) reads them. Folders let QEMU pass through to the files libvirt lends it.
 */
const FILE_MODE = 0o600;
const FOLDER_MODE = 0o711;

/**
 * How often every compute activity heartbeats, whatever it is doing: well within the workflows'
 * heartbeat timeout, so that a step that moves no bytes (a define, a destroy, a stalled transfer)
 * is not taken for a dead worker, and a cancellation reaches the activity within seconds.
 */
const HEARTBEAT_INTERVAL_MS = 5000;

/** How often a clean shutdown request is sent again (Nova's [compute] shutdown_retry_interval). */
const SHUTDOWN_RETRY_INTERVAL_MS = 10_000;

/** The details each running activity reported last: its heartbeat timer sends them again. */
const reported = new WeakMap<Context, Progress>();

/** Replaces the running activity's heartbeat details, and sends them now. */
function reportProgress(progress: Progress): void {
  const context = Context.current();
  reported.set(context, progress);
  context.heartbeat(progress);
}

/** Reports the bytes a transfer moved, at most twice a second (a digest calls it for every chunk). */
function byteProgress(step: string, bytesTotal?: number): (bytesDone: number) => void {
  let last = 0;
  return (bytesDone) => {
    const now = Date.now();
    if (now - last < 500 && bytesDone !== bytesTotal) return;
    last = now;
    reportProgress({ step, bytesDone, bytesTotal });
  };
}

/** The instance an activity's argument names ({ instanceUuid } or { instance }), if any. */
function instanceOf(argument: unknown): string | undefined {
  const { instanceUuid, instance } = (argument ?? {}) as { instanceUuid?: string; instance?: { uuid?: string } };
  return instanceUuid ?? instance?.uuid;
}

/**
 * A failure of libvirt, qemu-img or the host's disk as an ApplicationFailure of its class (lib/
 * compute-errors.ts): non-retryable where the same attempt would fail the same way, with the
 * tool's own reason. Failures already typed, and cancellations, pass as they are.
 */
function hostFailure(error: unknown, host: string, step: string, instanceUuid: string | undefined): unknown {
  if (error instanceof ApplicationFailure || error instanceof CancelledFailure) return error;
  const known = classifyHostError(error);
  if (!known) return error;
  return ApplicationFailure.create({
    type: known.type,
    message: `${step}${instanceUuid ? ` of instance ${instanceUuid}` : ''} on host ${host} failed: ${known.reason}`,
    nonRetryable: !known.retryable,
    cause: error as Error,
  });
}

type Activity = (...args: never[]) => Promise<unknown>;

/**
 * Every activity of a compute host as it runs on the worker: heartbeating on a timer from start to
 * end with the details it reported last, and failing with its host's errors classified. A retry
 * starts from the `uploaded` of the attempt before it, so that this survives the retry's own
 * heartbeats until the retry reports progress of its own.
 */
function computeActivities<T extends Record<string, Activity>>(host: string, activities: T): T {
  const wrapped = Object.entries(activities).map(([name, activity]) => [
    name,
    async (...args: Parameters<typeof activity>) => {
      const context = Context.current();
      const { uploaded } = (context.info.heartbeatDetails ?? {}) as Progress;
      reported.set(context, { step: name, ...(uploaded && { uploaded }) });
      const beat = () => context.heartbeat(reported.get(context));
      beat();
      const timer = setInterval(beat, HEARTBEAT_INTERVAL_MS);
      try {
        return await activity(...args);
      } catch (error) {
        // Whatever broke once the step was cancelled (an aborted upload, a killed qemu-img), the
        // workflow is told the step was cancelled: it rolls back, and its action says Cancelled.
        if (context.cancellationSignal.aborted) throw context.cancellationSignal.reason;
        throw hostFailure(error, host, name, instanceOf(args[0]));
      } finally {
        clearInterval(timer);
      }
    },
  ]);
  return Object.fromEntries(wrapped) as T;
}

/**
 * The largest virtual size an image may have to become a disk of `size` bytes; none for a size of
 * 0, which takes the image's own size (Nova's rule for a flavor of root_gb 0).
 */
function sizeLimit(size: number): number | undefined {
  return size > 0 ? size : undefined;
}

/** Ids become path components: only a uuid may. */
function checkedId(kind: string, id: string): string {
  if (!isUuid(id)) {
    throw ApplicationFailure.create({
      type: 'InvalidId',
      message: `${kind} id '${id}' is not a UUID`,
      nonRetryable: true,
    });
  }
  return id.toLowerCase();
}

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

/** The folder holding an instance's files on its host. */
export function instanceDirectory(instancesPath: string, instanceUuid: string): string {
  return path.join(instancesPath, checkedId('instance', instanceUuid));
}

/**
 * Stops the instance's domain, undefines it and removes the instance's files from this host; its
 * volumes stay in their pool. Also run outside any activity, by the host's cleanup at start.
 */
export async function removeInstanceFromHost(
  instancesPath: string,
  instanceUuid: string,
  domain: Domain | null,
  onStep: (step: string) => void = () => undefined,
): Promise<void> {
  if (domain) {
    onStep('destroying the domain');
    if ((await domain.getInfo()).state !== DomainState.SHUTOFF) await domain.destroy();
    await domain.undefine();
  }
  onStep('removing instance files');
  await rm(instanceDirectory(instancesPath, instanceUuid), { recursive: true, force: true });
}

/** An instance's root disk on its host. */
export function rootDiskPath(instancesPath: string, instanceUuid: string): string {
  return path.join(instanceDirectory(instancesPath, instanceUuid), 'disk');
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

export function createComputeActivities(config: Config['compute'], libvirt: LibvirtConnection, glance: GlanceClient) {
  /**
   * A full disk does not empty itself: retrying would keep the instance waiting for space that
   * may never come, so the action fails at once and rolls back.
   */
  const failWhenDiskFull =
    (what: string) =>
    (error: unknown): never => {
      if (error instanceof Error && isDiskFull(error)) {
        throw ApplicationFailure.create({
          type: 'HostDiskFull',
          message: `Host ${config.host} has no space left in ${config.instancesPath} for ${what}.`,
          nonRetryable: true,
          cause: error,
        });
      }
      throw error;
    };
  const instanceDir = (instanceUuid: string) => instanceDirectory(config.instancesPath, instanceUuid);
  const diskPath = (instanceUuid: string) => rootDiskPath(config.instancesPath, instanceUuid);

  /** The image's record; an image the context cannot see is not found. */
  async function requireImage(context: RequestContext, imageId: string): Promise<GlanceImage> {
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
  async function download(
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
      return failWhenDiskFull(`image ${imageId}`)(error);
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
  async function cachedImage(
    owner: Instance,
    imageId: string,
    maxVirtualSize: number | undefined,
  ): Promise<{ path: string } & InspectedImage> {
    const base = path.join(config.instancesPath, '_base', checkedId('image', imageId));
    await mkdir(path.dirname(base), { recursive: true, mode: FOLDER_MODE });
    const image = await requireImage(owner, imageId);
    const cached = await stat(base).then(
      () => true,
      () => false,
    );
    // Spawns of one image on one host may race to cache it: each downloads into a file of its
    // own, and the atomic rename leaves a whole image either way.
    const inspected = cached
      ? await checkedImageFile(base, image, maxVirtualSize)
      : await download(image, owner, base, { partial: `${base}.${randomUUID()}.part`, maxVirtualSize });
    return { path: base, ...inspected };
  }

  /** A file qemu-img made, readable by its owner only. */
  async function privateFile(file: string): Promise<string> {
    await chmod(file, FILE_MODE);
    return file;
  }

  async function prepareRootDisk(instance: Instance, root: RootDiskSource): Promise<DomainDisk> {
    const rootSize = instance.flavor.rootGb * 1024 ** 3;
    const maxVirtualSize = sizeLimit(rootSize);
    if (root.kind === 'standalone') {
      const file = diskPath(instance.uuid);
      const image = await requireImage(glance.snapshotContext, root.imageId);
      const { format } = await download(image, glance.snapshotContext, file, { maxVirtualSize, stored: root.snapshot });
      return { type: 'file', path: file, format };
    }
    if (root.kind === 'overlay') {
      const file = diskPath(instance.uuid);
      const base = await cachedImage(instance, root.imageId, maxVirtualSize);
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
      const base = await cachedImage(instance, root.imageId, sizeLimit(volumeSize));
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
  async function blankLocalDisks(instance: Instance): Promise<DomainDisk[]> {
    const { ephemeralGb, swap } = instance.flavor;
    const wanted = [
      { name: 'disk.eph0', size: ephemeralGb * 1024 ** 3 },
      { name: 'disk.swap', size: swap * 1024 ** 2 },
    ].filter((disk) => disk.size > 0);
    const disks: DomainDisk[] = [];
    for (const { name, size } of wanted) {
      const file = path.join(instanceDir(instance.uuid), name);
      await qemuImg.createBlank(file, size);
      await privateFile(file);
      disks.push({ type: 'file', path: file, format: 'qcow2' });
    }
    return disks;
  }

  /**
   * A root disk's backing chain is the project's own before qemu-img follows it: a standalone
   * qcow2, or a qcow2 overlay (whose header this project wrote) on the instance's image in _base.
   */
  async function checkRootDiskChain(instance: Instance, disk: string): Promise<void> {
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
    const base = path.join(config.instancesPath, '_base', instance.imageRef);
    if (!isUuid(instance.imageRef) || top.backingFile !== base)
      refuse(`its backing file is ${top.backingFile}, not ${base}`);
    if (!top.backingFormat) refuse('its backing file has no recorded format');
    await checkOwnFile(base, top.backingFormat!).catch((error: unknown) =>
      refuse(`its backing file ${base}: ${(error as Error).message}`),
    );
  }

  /** A file that must be a plain image of `format`, naming no other file. */
  async function checkOwnFile(file: string, format: string): Promise<void> {
    checkImage(await inspectImageFile(file), { diskFormat: format });
  }

  async function powerOnInstance({ instanceUuid }: { instanceUuid: string }): Promise<PowerState> {
    const domain = await libvirt.lookupInstance(instanceUuid);
    if (!domain) {
      throw ApplicationFailure.create({
        type: 'InstanceNotFoundOnHost',
        message: `Instance ${instanceUuid} has no domain on host ${config.host}.`,
        nonRetryable: true,
      });
    }
    if ((await domain.getInfo()).state === DomainState.SHUTOFF) await domain.create();
    return powerStateOf((await domain.getInfo()).state);
  }

  /** True while the domain's guest runs (or is paused, or shutting down). */
  async function running(domain: Domain): Promise<boolean> {
    const { state } = await domain.getInfo();
    return state !== DomainState.SHUTOFF && state !== DomainState.CRASHED;
  }

  /**
   * Asks the guest to shut down, again every shutdown_retry_interval (a guest may miss the first
   * ACPI event while it boots), for up to `timeout` seconds: Nova's _clean_shutdown. True when the
   * guest stopped in time.
   */
  async function cleanShutdown(instanceUuid: string, domain: Domain, timeout: number): Promise<boolean> {
    const context = Context.current();
    const deadline = Date.now() + timeout * 1000;
    reportProgress({ step: 'waiting for guest shutdown' });
    for (let nextRequest = Date.now(); Date.now() < deadline;) {
      if (Date.now() >= nextRequest) {
        log.info('requesting a clean shutdown', { instanceUuid, timeout });
        // A guest that stopped since the last look refuses the request: that is the outcome sought.
        const refusal = await domain.shutdown().then(
          () => null,
          (error: unknown) => error,
        );
        if (!(await running(domain))) return true;
        if (refusal) throw refusal;
        nextRequest = Date.now() + SHUTDOWN_RETRY_INTERVAL_MS;
      }
      // Rejects when the action is cancelled: a cancelled power-off does not go on to destroy.
      await context.sleep(Math.max(0, Math.min(1000, deadline - Date.now())));
      if (!(await running(domain))) return true;
    }
    return false;
  }

  /** removeInstanceFromHost, with its steps as the activity's progress. */
  async function removeFromHost(instanceUuid: string, domain: Domain | null): Promise<void> {
    await removeInstanceFromHost(config.instancesPath, instanceUuid, domain, (step) => reportProgress({ step }));
  }

  return computeActivities(config.host, {
    /**
     * Powers the instance off: a clean shutdown request, sent again every 10 s, up to `timeout`
     * seconds for the guest to stop, then destroy (docs/nova-behaviour.md §5.6). Returns the power_state after.
     */
    async powerOffInstance({ instanceUuid, timeout }: { instanceUuid: string; timeout: number }): Promise<PowerState> {
      const domain = await libvirt.lookupInstance(instanceUuid);
      if (!domain) return PowerState.NOSTATE;
      if (await running(domain)) {
        const stopped = timeout > 0 && (await cleanShutdown(instanceUuid, domain, timeout));
        Context.current().cancellationSignal.throwIfAborted();
        if (!stopped && (await running(domain))) {
          log.info('destroying the domain', { instanceUuid });
          await domain.destroy();
        }
      }
      return powerStateOf((await domain.getInfo()).state);
    },

    /**
     * Streams the powered-off instance's root disk into the queued Glance image, in the form
     * planSnapshot picks for this disk, checking that Glance stored exactly what was sent. Returns
     * the hash Glance must keep showing until the unshelve.
     */
    async snapshotInstance({ instance, imageId }: { instance: Instance; imageId: string }): Promise<UploadedSnapshot> {
      const context = glance.snapshotContext;
      const { heartbeatDetails } = Context.current().info;
      const existing = await glance.getImage(context, imageId);
      if (existing?.status === 'active') {
        // Only an upload of this very activity (an earlier attempt that died after it) counts.
        const uploaded = (heartbeatDetails as Progress | undefined)?.uploaded;
        if (
          uploaded &&
          existing.os_hash_algo === uploaded.osHashAlgo &&
          existing.os_hash_value === uploaded.osHashValue
        ) {
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
      const disk = diskPath(instance.uuid);
      await checkRootDiskChain(instance, disk);
      const plan = await planSnapshot(disk);
      log.info('snapshot method chosen', {
        instanceUuid: instance.uuid,
        method: plan.method,
        sampledRatio: Number(plan.sampledRatio.toFixed(3)),
        chain: plan.chain.map((image) => image.file),
      });
      const snapshot = path.join(instanceDir(instance.uuid), `snapshot-${checkedId('image', imageId)}.qcow2`);
      const { cancellationSignal } = Context.current();
      try {
        if (plan.method !== 'as-is') {
          const zstd = plan.method === 'flatten-zstd';
          reportProgress({ step: zstd ? 'compressing disk' : 'extracting disk' });
          await qemuImg
            .convert(disk, 'qcow2', snapshot, 'qcow2', { zstd, signal: cancellationSignal })
            .catch(failWhenDiskFull(`the snapshot of instance ${instance.uuid}`));
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
    },

    /** Undefines the domain and removes the instance's files from this host. */
    async destroyInstance({ instanceUuid }: { instanceUuid: string }): Promise<void> {
      await removeFromHost(instanceUuid, await libvirt.lookupInstance(instanceUuid));
      log.info('instance destroyed on host', { instanceUuid, host: config.host });
    },

    /**
     * Prepares the instance's root disk, defines its domain and starts it. A domain an earlier
     * attempt of this request defined is started as it is; one any other request left (a given-up
     * spawn, a rollback that never reached this host) is removed with its files first, so that a
     * stale guest never runs in the instance's place.
     */
    async spawnInstance({ instance, root, requestId }: SpawnRequest): Promise<PowerState> {
      const { cancellationSignal } = Context.current();
      const existing = await libvirt.lookupInstance(instance.uuid);
      const ours = existing !== null && domainRequestId(await existing.getXMLDesc()) === requestId;
      if (!ours) {
        if (existing) {
          log.warn('removing a domain another request defined', { instanceUuid: instance.uuid, requestId });
          await removeFromHost(instance.uuid, existing);
        }
        await mkdir(instanceDir(instance.uuid), { recursive: true, mode: FOLDER_MODE });
        reportProgress({ step: 'preparing the root disk' });
        const disk = await prepareRootDisk(instance, root);
        const localDisks = await blankLocalDisks(instance);
        cancellationSignal.throwIfAborted();
        reportProgress({ step: 'defining the domain' });
        const hypervisor = await libvirt.open();
        await hypervisor.domainDefineXML(domainXml(instance, disk, config.virtType, localDisks, requestId));
      }
      cancellationSignal.throwIfAborted();
      reportProgress({ step: 'starting the domain' });
      return powerOnInstance({ instanceUuid: instance.uuid });
    },

    powerOnInstance,

    /**
     * The power_state of each instance's domain on this host, by instance uuid (Nova's
     * _sync_power_states reads the same): what an instance that shows none here has is NOSTATE.
     */
    async listInstancePowerStates(): Promise<Record<string, PowerState>> {
      const states: Record<string, PowerState> = {};
      for (const domain of await (await libvirt.open()).connectListAllDomains()) {
        const name = await domain.getName();
        const uuid = name.slice('instance-'.length);
        if (name.startsWith('instance-') && isUuid(uuid)) states[uuid] = powerStateOf((await domain.getInfo()).state);
      }
      return states;
    },
  });
}

export type ComputeActivities = ReturnType<typeof createComputeActivities>;
