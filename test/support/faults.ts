// Breaking the stack's own services on purpose, at a chosen moment of an action.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { expect } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { instanceDirectory } from '../../lib/host-paths.js';
import { currentProgress, startAction } from '../../lib/actions.js';
import type { ReconcileSummary } from '../../workflows/reconcile.js';
import { e2eOwner, type KnownVm } from './known-vm.js';
import type { TestStack } from './stack.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const stackDir = process.env.STACK_DIR ?? path.join(repoDir, '.stack');

/** Waits until the action's current step reports `step` with some, not all, bytes moved. */
export async function midTransfer(handle: WorkflowHandle, step: 'upload' | 'download'): Promise<number> {
  for (;;) {
    const progress = await currentProgress(handle);
    if (progress?.step === step && progress.bytesDone && progress.bytesDone < (progress.bytesTotal ?? Infinity)) {
      return progress.bytesDone;
    }
    await sleep(50);
  }
}

/**
 * One of the processes scripts/stack started, by its pid file's name: `temporal` (the dev server),
 * `glance`, `libvirtd`, or one of the cluster profile's, `temporal-history-1` say.
 */
type StackProcess = 'temporal' | 'glance' | 'libvirtd' | `temporal-${string}`;

/** Signals one of the stack's processes (SIGTERM: a clean stop; SIGKILL: a crash) and waits until it is gone. */
export async function stopService(service: StackProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const pidFile = path.join(stackDir, 'run', `${service}.pid`);
  const pid = Number(
    await readFile(pidFile, 'utf8').catch(() => {
      throw new Error(`no ${pidFile}: this test stops the ${service} that scripts/stack started`);
    }),
  );
  process.kill(pid, signal);
  for (let alive = true; alive; await sleep(200)) {
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
  }
}

/** Which Temporal scripts/stack runs (its env file says): the dev server or the cluster. */
export const stackTemporal = process.env.STACK_TEMPORAL === 'cluster' ? 'cluster' : 'dev';

/** Stops the stack's whole Temporal, whichever profile runs, every process of it at once. */
export async function stopTemporal(): Promise<void> {
  if (stackTemporal === 'dev') return stopService('temporal');
  const names = (await readdir(path.join(stackDir, 'run')))
    .filter((file) => file.startsWith('temporal-') && file.endsWith('.pid'))
    .map((file) => file.slice(0, -'.pid'.length) as StackProcess);
  await Promise.all(names.map((name) => stopService(name)));
}

/**
 * Restarts the PostgreSQL server the stack uses (every connection to it dropped, the workers' and
 * the Temporal cluster's), as an operator's restart or a failover does: the stack's private one
 * or this machine's.
 */
export async function restartPostgres(): Promise<void> {
  const asPostgres = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
  const command = existsSync(path.join(stackDir, 'run', 'postgres.private'))
    ? [
        ...asPostgres,
        path.join(await postgresBin(), 'pg_ctl'),
        '-D',
        path.join(stackDir, 'postgres'),
        '-m',
        'fast',
        '-w',
        'restart',
      ]
    : ['pg_ctlcluster', '--skip-systemctl-redirect', await postgresVersion(), 'main', 'restart', '-m', 'fast'];
  await promisify(execFile)(command[0]!, command.slice(1));
}

async function postgresVersion(): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql')).sort((a, b) => Number(a) - Number(b));
  return versions.at(-1)!;
}

async function postgresBin(): Promise<string> {
  return path.join('/usr/lib/postgresql', await postgresVersion(), 'bin');
}

/** Starts whatever of the stack is not running (scripts/stack up), with its state kept on disk. */
export async function startStack(): Promise<void> {
  await promisify(execFile)('bash', [path.join(repoDir, 'scripts', 'stack'), 'up'], { env: process.env });
}

/**
 * Starts a shelve that offloads at once, after `shutdownTimeout` seconds of waiting for a clean
 * shutdown the guest (no OS) never does: the window a fault is injected in, or none.
 */
export function startShelve(stack: TestStack, instanceUuid: string, shutdownTimeout = 0): Promise<WorkflowHandle> {
  return startAction(stack.client, stack.config, 'shelve', { instanceUuid, shutdownTimeout, shelvedOffloadTime: 0 });
}

/** The instance's shelve snapshot is its one image in Glance, and active: none orphaned or doubled. */
export async function expectSingleSnapshot(stack: TestStack, vm: KnownVm): Promise<void> {
  const imageId = (await getInstance(stack.pool, vm.instanceUuid)).systemMetadata.shelved_image_id;
  const images = await stack.glance.listImages(e2eOwner, { name: `${vm.displayName}-shelved` });
  expect(images.map((image) => [image.id, image.status])).toEqual([[imageId, 'active']]);
}

/** Nothing of the instance is left on the stack's host: no domain, no folder. */
export async function expectOffHost(stack: TestStack, instanceUuid: string, when?: string): Promise<void> {
  expect(await stack.libvirt.lookupInstance(instanceUuid), when).toBeNull();
  expect(existsSync(instanceDirectory(stack.config.compute.instancesPath, instanceUuid)), when).toBe(false);
}

/** The messages of an error and all its causes, outermost first: where a workflow's reason is. */
export function failureMessages(error: unknown): string {
  const messages: string[] = [];
  for (let cause = error; cause instanceof Error; cause = cause.cause) messages.push(cause.message);
  return messages.join(' <- ');
}

/**
 * One run of the reconciler, as its Schedule would start it, on these instances only (other
 * tests' are not the test's to settle) and with no grace period.
 */
export function reconcileNow(stack: TestStack, instanceUuids: string[]): Promise<ReconcileSummary> {
  return stack.client.workflow.execute('reconcileInstances', {
    taskQueue: stack.config.temporal.conductorTaskQueue,
    workflowId: `reconcile-test-${randomUUID()}`,
    args: [{ graceSeconds: 0, instanceUuids }],
  });
}
