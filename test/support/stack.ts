// The real stack as the tests see it: a conductor and a compute worker running in this process
// against the services scripts/stack started, plus clients to look at each service directly.
import { execFile } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { Client, ScheduleNotFoundError } from '@temporalio/client';
import { DefaultLogger, type NativeConnection, Runtime } from '@temporalio/worker';
import type pg from 'pg';
import { type Config, loadConfig } from '../../lib/config.js';
import { RECONCILE_SCHEDULE_ID } from '../../lib/reconcile-schedule.js';
import { connectClient } from '../../lib/temporal-client.js';
import { GlanceClient } from '../../lib/glance.js';
import { removeInstanceFromHost } from '../../lib/host-paths.js';
import { domainName, LibvirtConnection } from '../../lib/libvirt.js';
import { claimHost, createComputeWorker, registerHost } from '../../workers/compute.js';
import { createConductorWorker } from '../../workers/conductor.js';
import { connectWorker } from '../../workers/runtime.js';
import { createPool } from '../../lib/postgres.js';
import { testRuntimeLog } from './logs.js';

/** A compute host's worker running in this process, with its own instance folder. */
export interface TestComputeHost {
  config: Config;
  /** Removes a test's instance: its domain and files from this host, and its record. */
  removeInstance(instanceUuid: string): Promise<void>;
  stop(): Promise<void>;
}

export interface TestStack {
  config: Config;
  pool: pg.Pool;
  glance: GlanceClient;
  libvirt: LibvirtConnection;
  client: Client;
  /** The compute host named by the environment (this machine's hostname by default). */
  compute: TestComputeHost;
  /** Another compute host on the same libvirtd: its own name, task queue and instance folder. */
  addComputeHost(host: string): Promise<TestComputeHost>;
  stop(): Promise<void>;
}

let runtimeInstalled = false;

async function startComputeHost(config: Config, connection: NativeConnection, pool: pg.Pool): Promise<TestComputeHost> {
  const libvirt = new LibvirtConnection(config.compute.libvirtUri);
  // As workers/compute.ts: the host's name for this worker alone, the host cleaned, then the queue.
  const hostLock = await claimHost(config, pool, libvirt);
  const worker = await createComputeWorker(config, connection, libvirt);
  const running = worker.run();
  const stopReporting = await registerHost(config, pool, libvirt);
  let stopped: Promise<void> | undefined;
  return {
    config,
    async removeInstance(instanceUuid) {
      await removeInstanceFromHost(config.compute, instanceUuid, await libvirt.lookupInstance(instanceUuid));
      // Gone from the database too, or it would count against the host's capacity.
      await pool.query('DELETE FROM instances WHERE uuid = $1', [instanceUuid]);
    },
    /** As a worker process's end: its domains keep running, its name is free. Once, however often called. */
    stop() {
      stopped ??= (async () => {
        stopReporting();
        worker.shutdown();
        await running;
        await Promise.all([hostLock.release(), libvirt.close()]);
      })();
      return stopped;
    },
  };
}

/** `settings` override the environment's configuration, e.g. SHELVED_OFFLOAD_TIME. */
export async function startTestStack(settings: NodeJS.ProcessEnv = {}): Promise<TestStack> {
  if (!runtimeInstalled) {
    // Through the project's logger (redacted), to stderr and test-output/logs/ (scripts/scan-logs).
    Runtime.install({ logger: new DefaultLogger('WARN', testRuntimeLog) });
    runtimeInstalled = true;
  }
  const config = loadConfig({ ...process.env, ...settings });
  const pool = createPool(config.databaseUrl);
  const glance = new GlanceClient(config.glance);
  const libvirt = new LibvirtConnection(config.compute.libvirtUri);
  const workerConnection = await connectWorker(config);
  const conductor = await createConductorWorker(config, workerConnection, pool);
  const conductorRunning = conductor.run();
  const computeHosts = [await startComputeHost(config, workerConnection, pool)];
  const connection = await connectClient(config);
  const client = new Client({ connection, namespace: config.temporal.namespace });
  // A schedule the demo's conductor made would reconcile the tests' instances behind their back.
  await client.schedule
    .getHandle(RECONCILE_SCHEDULE_ID)
    .pause('the tests run their own reconciles')
    .catch((error: unknown) => {
      if (!(error instanceof ScheduleNotFoundError)) throw error;
    });

  return {
    config,
    pool,
    glance,
    libvirt,
    client,
    compute: computeHosts[0]!,
    async addComputeHost(host) {
      const hostConfig = loadConfig({
        ...process.env,
        ...settings,
        COMPUTE_HOST: host,
        INSTANCES_PATH: `${config.compute.instancesPath}-${host}`,
      });
      const added = await startComputeHost(hostConfig, workerConnection, pool);
      computeHosts.push(added);
      return added;
    },
    async stop() {
      await Promise.all(computeHosts.map((host) => host.stop()));
      // Added hosts are gone for good: no later test's scheduler may pick them.
      const added = computeHosts.slice(1).map((host) => host.config.compute.host);
      await pool.query('DELETE FROM compute_nodes WHERE host = ANY($1)', [added]);
      conductor.shutdown();
      await conductorRunning;
      await Promise.all([connection.close(), workerConnection.close(), pool.end(), libvirt.close()]);
    },
  };
}

const run = promisify(execFile);

/**
 * Writes `data` at `offset` of the running guest's root disk, through QEMU itself, as the guest
 * would: the bytes land in the instance's qcow2 overlay.
 */
export async function guestWrite(
  config: Config,
  instanceUuid: string,
  offset: number,
  data: Buffer,
  /** The disk's index: 0 is vda (root), 1 is vdb (ephemeral), … */
  disk = 0,
): Promise<void> {
  const source = `/tmp/vm-shelve-guest-write-${instanceUuid}`;
  await writeFile(source, data);
  try {
    // Flushed, as a guest would: until then QEMU may hold the qcow2 metadata in memory.
    for (const command of [`write -s ${source} ${offset} ${data.length}`, 'flush']) {
      const { stdout } = await run('virsh', [
        '-c',
        config.compute.libvirtUri,
        'qemu-monitor-command',
        domainName(instanceUuid),
        '--hmp',
        `qemu-io -d /machine/peripheral/virtio-disk${disk}/virtio-backend "${command}"`,
      ]);
      if (stdout.trim() !== '') throw new Error(`guest ${command.split(' ')[0]} failed: ${stdout.trim()}`);
    }
  } finally {
    await rm(source, { force: true });
  }
}
