// The compute worker of one hypervisor host: libvirt and disk activities on its own task queue.
// It registers its host with the scheduler and reports it alive every few seconds.
import { mkdir, statfs } from 'node:fs/promises';
import { type NativeConnection, Worker } from '@temporalio/worker';
import type pg from 'pg';
import { createComputeActivities } from '../activities/compute.js';
import { reportComputeNode } from '../activities/database.js';
import { type Config, loadConfig } from '../lib/config.js';
import { GlanceClient } from '../lib/glance.js';
import { ensureStoragePool, LibvirtConnection } from '../lib/libvirt.js';
import { logger } from '../lib/logger.js';
import { serveMetrics } from '../lib/metrics.js';
import { computeTaskQueue } from '../lib/temporal.js';
import { connectWorker, installRuntimeLogging, isMain } from './runtime.js';
import { createPool } from '../lib/postgres.js';

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
  const worker = await createComputeWorker(config, await connectWorker(config), libvirt);
  const stopReporting = await registerHost(config, pool, libvirt);
  logger.info(
    { host: config.compute.host, taskQueue: computeTaskQueue(config.compute.host) },
    'compute worker started',
  );
  await worker.run();
  stopReporting();
  metrics?.close();
  await Promise.all([pool.end(), libvirt.close()]);
}
