// The compute worker of one hypervisor host: libvirt and disk activities on its own task queue.
// It takes its host's name for itself, cleans the host of what the database no longer places
// there, then registers the host with the scheduler and reports it alive every few seconds.
import { mkdir, statfs } from 'node:fs/promises';
import { type NativeConnection, Worker } from '@temporalio/worker';
import type pg from 'pg';
import { createComputeActivities } from '../activities/compute/index.js';
import { reportComputeNode } from '../lib/db/compute-services.js';
import { reconcileHost } from '../activities/host-reconcile.js';
import { type Config, loadConfig } from '../lib/config.js';
import { GlanceClient } from '../lib/glance.js';
import { ensureStoragePool, LibvirtConnection } from '../lib/libvirt.js';
import { logger } from '../lib/logger.js';
import { serveMetrics } from '../lib/metrics.js';
import { computeTaskQueue } from '../lib/temporal.js';
import { connectWorker, installRuntimeLogging, isMain } from './runtime.js';
import { type AdvisoryLock, AdvisoryLockHeld, createPool, holdAdvisoryLock } from '../lib/postgres.js';

const REPORT_INTERVAL_MS = 10_000;

/**
 * How often an activity's heartbeat (with its progress) reaches the server. The SDK's default,
 * 80% of the heartbeat timeout, would show the CLI and the Web UI a new figure every 24 s.
 */
export const HEARTBEAT_THROTTLE = '1 second';

export async function createComputeWorker(config: Config, connection: NativeConnection, libvirt: LibvirtConnection) {
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: computeTaskQueue(config.compute.host),
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    activities: createComputeActivities(config.compute, libvirt, new GlanceClient(config.glance)),
  });
}

/**
 * Makes this process the one compute worker of its host, then removes from the host what the
 * database no longer places on it (activities/host-reconcile.ts), before the worker takes any
 * step. Two workers of one host name would share its task queue: a step meant for this host could
 * run on the other machine. The returned lock is held until released; its `lost` settles if
 * another worker took the name while PostgreSQL was away, and the worker must then stop.
 */
export async function claimHost(config: Config, pool: pg.Pool, libvirt: LibvirtConnection): Promise<AdvisoryLock> {
  const { host } = config.compute;
  const lock = await holdAdvisoryLock(config.databaseUrl, `compute host ${host}`, `compute ${host}`).catch(
    (error: unknown) => {
      if (!(error instanceof AdvisoryLockHeld)) throw error;
      throw new Error(
        `Another compute worker already runs as host ${host} (${error.holder ?? 'its PostgreSQL session is not visible'}): ` +
          'two workers of one host would share its task queue. Stop it, or give this one its own COMPUTE_HOST.',
        { cause: error },
      );
    },
  );
  void lock.lost.then((held) =>
    logger.error({ host, holder: held.holder }, 'another compute worker took this host name: this one stops'),
  );
  try {
    await reconcileHost(config.compute, libvirt, pool);
  } catch (error) {
    await lock.release();
    throw error;
  }
  return lock;
}

/**
 * Prepares this host (instances folder, volume pool) and reports it to the scheduler now and then
 * every few seconds; returns the function that stops the reports.
 */
export async function registerHost(config: Config, pool: pg.Pool, libvirt: LibvirtConnection) {
  const info = await (await libvirt.open()).nodeGetInfo();
  const { compute } = config;
  await mkdir(compute.instancesPath, { recursive: true });
  await ensureStoragePool(compute.libvirtUri, compute.volumePool);
  const report = async () => {
    const disk = await statfs(compute.instancesPath);
    await reportComputeNode(pool, {
      host: compute.host,
      availabilityZone: compute.availabilityZone,
      hypervisorType: compute.virtType,
      vcpus: info.cpus,
      memoryMb: Math.floor(info.memory / 1024),
      localGb: Math.floor((disk.blocks * disk.bsize) / 1024 ** 3),
      cpuAllocationRatio: compute.cpuAllocationRatio,
      ramAllocationRatio: compute.ramAllocationRatio,
      diskAllocationRatio: compute.diskAllocationRatio,
    });
  };
  await report();
  const timer = setInterval(() => {
    report().catch((error: unknown) => logger.warn({ err: error }, 'host report failed'));
  }, REPORT_INTERVAL_MS);
  return () => clearInterval(timer);
}

if (isMain(import.meta.url)) {
  installRuntimeLogging();
  const config = loadConfig();
  const metrics = serveMetrics('127.0.0.1', config.metricsPort);
  const pool = createPool(config.databaseUrl);
  const libvirt = new LibvirtConnection(config.compute.libvirtUri);
  const hostLock = await claimHost(config, pool, libvirt);
  const worker = await createComputeWorker(config, await connectWorker(config), libvirt);
  void hostLock.lost.then(() => {
    process.exitCode = 1;
    worker.shutdown();
  });
  const stopReporting = await registerHost(config, pool, libvirt);
  logger.info(
    { host: config.compute.host, taskQueue: computeTaskQueue(config.compute.host) },
    'compute worker started',
  );
  await worker.run();
  stopReporting();
  metrics?.close();
  await Promise.all([hostLock.release(), pool.end(), libvirt.close()]);
}
