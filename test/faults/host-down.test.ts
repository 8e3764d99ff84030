// A compute host that goes down and comes back, on the real stack: its servers are deleted at
// once from the database (Nova's local delete), and when its worker starts again it removes the
// domains and files the database no longer places on it, but never a volume, never an instance
// the database still places there. A second worker under the same host name is refused.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { DomainState } from '@unraid/libvirt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { instanceDirectory, rootDiskFile } from '../../lib/host-paths.js';
import { reportComputeNode } from '../../lib/db/compute-services.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Config } from '../../lib/config.js';
import { failureMessages } from '../support/faults.js';
import { allocateFixedIp } from '../../lib/db/networks.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestComputeHost, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';
import { startWorkerProcess } from '../support/worker-process.js';

describe('a compute host that is down, then comes back', () => {
  let stack: TestStack;
  let host: TestComputeHost;
  let stub: StubHost;
  const hostName = `down-${randomUUID().slice(0, 8)}`;
  const vms: KnownVm[] = [];
  let deleted: KnownVm;
  let volumeBacked: KnownVm;
  let moved: KnownVm;
  let kept: KnownVm;
  let volumeFile: string;

  /** The host's compute_nodes row as a host silent for an hour leaves it: down, for the scheduler too. */
  async function silence(name: string): Promise<void> {
    await stack.pool.query(`UPDATE compute_nodes SET updated_at = now() - interval '1 hour' WHERE host = $1`, [name]);
  }

  /** The fixed IPs the instance's ports hold (none once released). */
  async function portAddresses(instanceUuid: string): Promise<string[]> {
    const { rows } = await stack.pool.query<{ address: string }>(
      'SELECT host(fixed_ip) AS address FROM ports WHERE instance_uuid = $1 AND NOT deleted',
      [instanceUuid],
    );
    return rows.map((row) => row.address);
  }

  /** The address the project's next server would get, in a transaction rolled back. */
  async function nextFreeAddress(): Promise<string> {
    const client = await stack.pool.connect();
    try {
      await client.query('BEGIN');
      return (await allocateFixedIp(client, e2eOwner.projectId, 'private')).address;
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  }

  async function deleteInstance(instanceUuid: string): Promise<void> {
    await (await startAction(stack.client, stack.config, 'delete', { instanceUuid })).result();
  }

  const domainOf = (instanceUuid: string) => stack.libvirt.lookupInstance(instanceUuid);
  const folderOf = (config: Config, instanceUuid: string) =>
    existsSync(instanceDirectory(config.compute.instancesPath, instanceUuid));

  beforeAll(async () => {
    // A host that is up but whose worker takes no step fails the delete within seconds.
    stack = await startTestStack({ COMPUTE_HOST_TIMEOUT: '6' });
    host = await stack.addComputeHost(hostName);
    for (const options of [{}, { bootVolume: { sizeGb: 1 } }, {}, {}]) {
      vms.push(await buildKnownVm(stack, hostName, options));
    }
    [deleted, volumeBacked, moved, kept] = vms as [KnownVm, KnownVm, KnownVm, KnownVm];
    volumeFile = rootDiskFile(host.config.compute, await getInstance(stack.pool, volumeBacked.instanceUuid));
    stub = await startStubHost(stack);
  }, 300_000);

  afterAll(async () => {
    for (const vm of vms) await vm.remove(host.config);
    await stub?.stop();
    await stack?.stop();
    // The volume outlives its instance by design: the test removes its own.
    if (volumeFile) await rm(volumeFile, { force: true });
  }, 120_000);

  it('deletes its servers at once while it is down, and removes their domains and files when it is back', async () => {
    await host.stop();
    await silence(hostName);
    // A partial image download a killed worker left, and one that may still be running.
    const base = path.join(host.config.compute.instancesPath, '_base');
    await mkdir(base, { recursive: true });
    const stalePart = path.join(base, `${randomUUID()}.${randomUUID()}.part`);
    const freshPart = path.join(base, `${randomUUID()}.${randomUUID()}.part`);
    await writeFile(stalePart, 'half an image');
    await writeFile(freshPart, 'half an image');
    const anHourAgo = new Date(Date.now() - 3600_000);
    await utimes(stalePart, anHourAgo, anHourAgo);

    for (const vm of [deleted, volumeBacked]) {
      await deleteInstance(vm.instanceUuid);
      await expect(getInstance(stack.pool, vm.instanceUuid)).rejects.toMatchObject({ type: 'InstanceNotFound' });
      const [action] = await listInstanceActions(stack.pool, vm.instanceUuid);
      // Nothing was asked of the host: no compute_terminate_instance waiting for a worker.
      expect(action).toMatchObject({ action: 'delete', message: null });
      expect(action!.events).toEqual([
        expect.objectContaining({ event: 'local_delete', host: hostName, result: 'Success' }),
      ]);
      // The guest still runs on the host: only the host itself can remove it.
      expect((await (await domainOf(vm.instanceUuid))!.getInfo()).state).toBe(DomainState.RUNNING);
    }
    // So its address stays held: a new server of the project never gets the one it answers at.
    const heldAddresses = await portAddresses(deleted.instanceUuid);
    expect(heldAddresses).toHaveLength(1);
    expect(await nextFreeAddress()).not.toBe(heldAddresses[0]);
    // As after an unshelve elsewhere whose rollback never reached this host (F9): the database
    // places the instance on another host, with no action in progress.
    await stack.pool.query('UPDATE instances SET host = $2, node = $2 WHERE uuid = $1', [
      moved.instanceUuid,
      stack.config.compute.host,
    ]);

    host = await stack.addComputeHost(hostName);

    for (const vm of [deleted, volumeBacked, moved]) {
      expect(await domainOf(vm.instanceUuid)).toBeNull();
      expect(folderOf(host.config, vm.instanceUuid)).toBe(false);
    }
    expect(existsSync(volumeFile)).toBe(true);
    expect((await (await domainOf(kept.instanceUuid))!.getInfo()).state).toBe(DomainState.RUNNING);
    expect(await kept.diskIsIntact(host.config)).toBe(true);
    expect(existsSync(stalePart)).toBe(false);
    expect(existsSync(freshPart)).toBe(true);
    // The guests are gone: their addresses are free again.
    expect(await portAddresses(deleted.instanceUuid)).toEqual([]);
    expect(await portAddresses(volumeBacked.instanceUuid)).toEqual([]);
    expect(ipValue(await nextFreeAddress())).toBeLessThanOrEqual(ipValue(heldAddresses[0]!));
  });

  it('refuses a second compute worker under the same host name, and the first keeps its host', async () => {
    const refused = startWorkerProcess('compute', {
      COMPUTE_HOST: hostName,
      INSTANCES_PATH: host.config.compute.instancesPath,
    });
    await expect(refused).rejects.toThrow(`Another compute worker already runs as host ${hostName}`);
    await expect(stack.addComputeHost(hostName)).rejects.toThrow(
      `Another compute worker already runs as host ${hostName}`,
    );
    expect((await (await domainOf(kept.instanceUuid))!.getInfo()).state).toBe(DomainState.RUNNING);
  });

  it('waits for a host that is up, releasing the server when its worker takes no step; deletes it once the host is forced down', async () => {
    const { uuid } = await stub.buildInstance();
    // The instance's host reports as up, but no worker serves its queue.
    const ghost = `ghost-${randomUUID().slice(0, 8)}`;
    await reportComputeNode(stack.pool, {
      host: ghost,
      availabilityZone: 'nova',
      hypervisorType: 'stub',
      vcpus: 1,
      memoryMb: 512,
      localGb: 1,
      cpuAllocationRatio: 1,
      ramAllocationRatio: 1,
      diskAllocationRatio: 1,
    });
    try {
      await stack.pool.query('UPDATE instances SET host = $2, node = $2 WHERE uuid = $1', [uuid, ghost]);
      const failure = await deleteInstance(uuid).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(WorkflowFailedError);
      expect(failureMessages(failure)).toContain(`Compute host ${ghost} did not take the step destroyInstance`);
      expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null, host: ghost });

      // An admin forces the host down (os-services): down at once, though it reported just now.
      await stack.pool.query('UPDATE compute_nodes SET forced_down = true WHERE host = $1', [ghost]);
      await deleteInstance(uuid);
      await expect(getInstance(stack.pool, uuid)).rejects.toMatchObject({ type: 'InstanceNotFound' });
      const [action] = await listInstanceActions(stack.pool, uuid);
      expect(action!.events.map((event) => event.event)).toEqual(['local_delete']);
    } finally {
      await stack.pool.query('DELETE FROM compute_nodes WHERE host = $1', [ghost]);
    }
  });

  it('stops a worker whose host name another session took while its PostgreSQL connection was down', async () => {
    const name = `taken-${randomUUID().slice(0, 8)}`;
    const worker = await startWorkerProcess('compute', {
      COMPUTE_HOST: name,
      INSTANCES_PATH: `${stack.config.compute.instancesPath}-${name}`,
    });
    const taker = new pg.Client({ connectionString: stack.config.databaseUrl });
    await taker.connect();
    try {
      const { rows } = await taker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      // Queued behind the worker's session: granted the moment that session ends, before the
      // worker can connect again to take it back.
      const taken = taker.query(`SELECT pg_advisory_lock(hashtext('vm-shelve'), hashtext($1))`, [
        `compute host ${name}`,
      ]);
      const queued = () => stack.pool.query('SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted', [rows[0]!.pid]);
      while ((await queued()).rowCount === 0) await sleep(50);
      const terminated = await stack.pool.query(
        `SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE $1`,
        [`vm-shelve pid ${worker.pid} %`],
      );
      expect(terminated.rowCount).toBe(1);
      await taken;
      // The worker stops on its own (a worker that kept running would fail the test by its timeout).
      while (isRunning(worker.pid)) await sleep(200);
    } finally {
      await taker.end();
      await worker.stop();
      await stack.pool.query('DELETE FROM compute_nodes WHERE host = $1', [name]);
    }
  });
});

/** An IPv4 address as a number, for comparing. */
function ipValue(address: string): number {
  return address.split('.').reduce((sum, part) => sum * 256 + Number(part), 0);
}

/** True while the process runs. */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
