// vm-shelve itself, driven as a user would: each action through its real workflow, timed from
// the request to the workflow's result, plus the untimed moves that put a chosen disk under an
// instance between runs.
import { randomUUID } from 'node:crypto';
import { copyFile } from 'node:fs/promises';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { DomainState } from '@unraid/libvirt';
import type pg from 'pg';
import { rootDiskPath } from '../lib/host-paths.js';
import { type Action, startAction } from '../lib/actions.js';
import type { Config } from '../lib/config.js';
import type { GlanceClient, RequestContext } from '../lib/glance.js';
import type { LibvirtConnection } from '../lib/libvirt.js';
import type { Flavor, Instance } from '../lib/nova.js';
import type { Leftovers } from './leftovers.js';

/** Who owns everything the bench makes: a project of its own, so nothing is mistaken for a test's. */
export const BENCH_OWNER = { projectId: 'bench-project', userId: 'bench-user' };

/** Names of the images the bench makes itself (shelve snapshots are vm-shelve's, named after the instance). */
export const imageName = {
  boot: (what: 'tiny' | 'overlay' | 'guest') => `bench-boot-${what}`,
  nova: (disk: string) => `bench-nova-${disk}`,
  floor: (disk: string) => `bench-floor-${disk}`,
};

export interface Bench {
  /** The bench conductor's configuration (its own task queue). */
  config: Config;
  client: Client;
  pool: pg.Pool;
  glance: GlanceClient;
  /** qemu:///system, where the bench's real domains run. */
  libvirt: LibvirtConnection;
  leftovers: Leftovers;
}

export interface Timed {
  seconds: number;
  instance: Instance;
  handle: WorkflowHandle;
}

/** Runs one action to its end: seconds from the request to the workflow's result. */
export async function timedAction<A extends Action>(
  bench: Bench,
  action: A,
  input: Parameters<typeof startAction<A>>[3],
): Promise<Timed> {
  const started = performance.now();
  const handle = await startAction(bench.client, bench.config, action, input);
  const instance = await bench.leftovers.running(handle, handle.result() as Promise<Instance>);
  return { seconds: (performance.now() - started) / 1000, instance, handle };
}

export function benchFlavor(name: string, rootGb: number, memoryMb = 128): Flavor {
  return { flavorid: `bench-${name}`, name: `bench.${name}`, vcpus: 1, memoryMb, rootGb, ephemeralGb: 0, swap: 0 };
}

/**
 * Builds an instance of `imageRef` through the build workflow, on `host` or where the scheduler
 * places it in `availabilityZone`, for `owner` (the bench's project by default); ACTIVE, its
 * domain running.
 */
export async function buildInstance(
  bench: Bench,
  {
    host,
    availabilityZone,
    imageRef,
    flavor,
    name,
    owner = BENCH_OWNER,
  }: {
    host?: string;
    availabilityZone?: string;
    imageRef: string;
    flavor: Flavor;
    name: string;
    owner?: RequestContext;
  },
): Promise<Timed> {
  const instanceUuid = randomUUID();
  bench.leftovers.instance(instanceUuid);
  return timedAction(bench, 'build', {
    instanceUuid,
    displayName: `bench-${name}-${instanceUuid.slice(0, 8)}`,
    ...owner,
    imageRef,
    flavor,
    host,
    availabilityZone,
  });
}

/** Shelve as the bench runs it: no clean shutdown (the guest has no OS to answer one), offload at once. */
export function shelve(bench: Bench, instanceUuid: string): Promise<Timed> {
  return timedAction(bench, 'shelve', { instanceUuid, shutdownTimeout: 0, shelvedOffloadTime: 0 });
}

/**
 * Unshelve onto the bench's own host, never one a test registered: the one named, or one the
 * scheduler picks in the zone the instance was built in (the bench's own zone).
 */
export function unshelve(bench: Bench, instanceUuid: string, host?: string): Promise<Timed> {
  return timedAction(bench, 'unshelve', { instanceUuid, host });
}

async function domainOf(bench: Bench, instanceUuid: string) {
  const domain = await bench.libvirt.lookupInstance(instanceUuid);
  if (!domain) throw new Error(`instance ${instanceUuid} has no domain on ${bench.config.compute.libvirtUri}`);
  return domain;
}

export async function isRunning(bench: Bench, instanceUuid: string): Promise<boolean> {
  const { state } = await (await domainOf(bench, instanceUuid)).getInfo();
  return state === DomainState.RUNNING;
}

/** Destroys the instance's running domain; returns the seconds libvirt took. */
export async function timedDestroy(bench: Bench, instanceUuid: string): Promise<number> {
  const domain = await domainOf(bench, instanceUuid);
  const started = performance.now();
  await domain.destroy();
  return (performance.now() - started) / 1000;
}

/**
 * Puts a copy of `disk` in place of the instance's root disk, its domain off, then starts the
 * domain again unless told not to. The instance's record does not change: it stays ACTIVE.
 */
export async function replaceRootDisk(
  bench: Bench,
  instancesPath: string,
  instanceUuid: string,
  disk: string,
  { start = true } = {},
): Promise<void> {
  const domain = await domainOf(bench, instanceUuid);
  if ((await domain.getInfo()).state !== DomainState.SHUTOFF) await domain.destroy();
  await copyFile(disk, rootDiskPath(instancesPath, instanceUuid));
  if (start) await domain.create();
}

export async function startDomain(bench: Bench, instanceUuid: string): Promise<void> {
  await (await domainOf(bench, instanceUuid)).create();
}

export async function stopDomain(bench: Bench, instanceUuid: string): Promise<void> {
  const domain = await domainOf(bench, instanceUuid);
  if ((await domain.getInfo()).state !== DomainState.SHUTOFF) await domain.destroy();
}
