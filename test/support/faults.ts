// Breaking the stack's own services on purpose, at a chosen moment of an action.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
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

/** Stops one of the services scripts/stack started (SIGTERM) and waits until it is gone. */
export async function stopService(service: 'temporal' | 'glance' | 'libvirtd'): Promise<void> {
  const pidFile = path.join(stackDir, 'run', `${service}.pid`);
  const pid = Number(
    await readFile(pidFile, 'utf8').catch(() => {
      throw new Error(`no ${pidFile}: this test stops the ${service} that scripts/stack started`);
    }),
  );
  process.kill(pid, 'SIGTERM');
  for (let alive = true; alive; await sleep(200)) {
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
  }
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
