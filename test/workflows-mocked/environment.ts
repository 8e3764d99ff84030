// What the workflow tests of the fast tier run on: a Temporal dev server of their own, the
// conductor's workflows on a Worker whose activities are in-memory fakes
// (test/support/fake-activities.ts), and stub compute activities on one host's task queue.
//
// createTimeSkipping() would let a timer of a day pass in milliseconds, but it needs the Java test
// server, which the SDK downloads on first use from temporal.download: not reachable from this
// machine. The Temporal CLI that scripts/setup builds is here: a real dev server, where time passes
// for real.
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Client } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import {
  bundleWorkflowCode,
  DefaultLogger,
  type Logger,
  Runtime,
  Worker,
  type WorkflowBundle,
} from '@temporalio/worker';
import { expect } from 'vitest';
import type { ComputeActivities } from '../../activities/compute/index.js';
import { ComputeHost, computeTaskQueue, InstanceAction, InstanceUuid } from '../../lib/temporal.js';
import { HEARTBEAT_THROTTLE } from '../../workers/compute.js';
import type { FakeConductor } from '../support/fake-activities.js';
import { historyToJson } from '../support/histories.js';
import { stubComputeActivities } from '../support/stub-host.js';

/** Who cancels in these tests, as the actions log records it. */
export const testIdentity = 'operator@workflows-mocked';

/** The Temporal CLI scripts/setup builds (scripts/common.sh, temporal_bin), unless TEMPORAL_CLI names one. */
function temporalCli(): string {
  const cache =
    process.env.VM_SHELVE_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'vm-shelve');
  return process.env.TEMPORAL_CLI ?? path.join(cache, 'temporal-cli-1.5.1', 'temporal');
}

export interface MockedTemporal {
  env: TestWorkflowEnvironment;
  /** The workflows and the conductor's interceptors, bundled once for every Worker of a file. */
  workflowBundle: WorkflowBundle;
}

/** `interceptorModules`: workflow interceptors of the test's own, beside the conductor's. */
export async function startMockedTemporal(interceptorModules: string[] = []): Promise<MockedTemporal> {
  // As Temporal's samples: warnings and errors only, not every worker's state changes. Once per
  // process, which vitest gives each test file.
  const { logger } = Runtime.install({ logger: new DefaultLogger('WARN') });
  const [env, workflowBundle] = await Promise.all([
    TestWorkflowEnvironment.createLocal({
      server: {
        executable: { type: 'existing-path', path: temporalCli() },
        // The workflows tag themselves with these, as scripts/stack registers them.
        searchAttributes: [InstanceUuid, ComputeHost, InstanceAction],
      },
      client: { identity: testIdentity },
    }),
    bundleConductorWorkflows(logger, interceptorModules),
  ]);
  return { env, workflowBundle };
}

/** The workflows and interceptors workers/conductor.ts runs, and `interceptorModules` beside them. */
export function bundleConductorWorkflows(logger: Logger, interceptorModules: string[] = []): Promise<WorkflowBundle> {
  return bundleWorkflowCode({
    workflowsPath: fileURLToPath(new URL('../../workflows/index.ts', import.meta.url)),
    workflowInterceptorModules: [
      fileURLToPath(new URL('../../workflows/interceptors.ts', import.meta.url)),
      ...interceptorModules,
    ],
    logger,
  });
}

/** A host name of the test's own: no task of another test's workflow reaches its stub. */
export function newHost(): string {
  return `h1-${randomUUID().slice(0, 8)}`;
}

export interface StubCompute {
  activities: ComputeActivities;
  /** The compute steps run, in order. */
  calls: (keyof ComputeActivities)[];
}

/** Compute activities that succeed at once, as test/support/stub-host.ts's, but for `overrides`. */
export function stubCompute(fake: FakeConductor, overrides: Partial<ComputeActivities> = {}): StubCompute {
  const calls: (keyof ComputeActivities)[] = [];
  const stubs = stubComputeActivities(async (imageId) => fake.upload(imageId), overrides);
  const recorded = Object.fromEntries(
    Object.entries(stubs).map(([step, run]) => [
      step,
      (...args: never[]) => {
        calls.push(step as keyof ComputeActivities);
        return (run as (...args: never[]) => Promise<unknown>)(...args);
      },
    ]),
  ) as ComputeActivities;
  return { activities: recorded, calls };
}

/**
 * Runs `body` while a conductor Worker (on a task queue of its own unless `taskQueue` names one,
 * passed to `body`) and the host's compute Worker run, and stops both when it ends.
 */
export async function withWorkers<T>(
  { env, workflowBundle }: MockedTemporal,
  fake: FakeConductor,
  host: string,
  compute: StubCompute,
  body: (taskQueue: string) => Promise<T>,
  taskQueue = `conductor-${randomUUID()}`,
): Promise<T> {
  const [conductor, computeWorker] = await Promise.all([
    Worker.create({ connection: env.nativeConnection, taskQueue, workflowBundle, activities: fake.activities }),
    createComputeWorker(env, host, compute),
  ]);
  const recordTo = process.env.RECORD_HISTORIES;
  const run = async () => {
    const result = await body(taskQueue);
    if (recordTo) await recordHistories(env.client, taskQueue, recordTo);
    return result;
  };
  return conductor.runUntil(computeWorker.runUntil(run()));
}

/** The compute Worker of one host, on its task queue. */
function createComputeWorker(env: TestWorkflowEnvironment, host: string, compute: StubCompute): Promise<Worker> {
  return Worker.create({
    connection: env.nativeConnection,
    taskQueue: computeTaskQueue(host),
    // As workers/compute.ts: a cancel reaches a running step within a second.
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    activities: compute.activities,
  });
}

/** Runs `body` while another host's compute Worker runs (inside withWorkers' body), and stops it when it ends. */
export async function withComputeWorker<T>(
  { env }: MockedTemporal,
  host: string,
  compute: StubCompute,
  body: () => Promise<T>,
): Promise<T> {
  return (await createComputeWorker(env, host, compute)).runUntil(body());
}

/**
 * RECORD_HISTORIES=<dir> (scripts/record-histories): the histories of the workflows a test ran on
 * `taskQueue` that have ended, saved for test/workflows-mocked/replay.test.ts as
 * `<workflow type>--<test name>[-<n>].json`. One still running (a timer left waiting) has no end to
 * replay against and is left out.
 */
async function recordHistories(client: Client, taskQueue: string, dir: string): Promise<void> {
  const test = (expect.getState().currentTestName ?? 'unnamed')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .slice(0, 100)
    .replace(/-+$/, '');
  const seen = new Map<string, number>();
  await mkdir(dir, { recursive: true });
  const listed = [];
  for await (const workflow of client.workflow.list({ query: `TaskQueue = '${taskQueue}'` })) listed.push(workflow);
  listed.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
  for (const { workflowId, runId } of listed) {
    // Visibility may lag behind the workflow's end; its own description does not.
    const handle = client.workflow.getHandle(workflowId, runId);
    const { status, type } = await handle.describe();
    if (status.name === 'RUNNING') continue;
    const n = (seen.get(type) ?? 0) + 1;
    seen.set(type, n);
    const name = `${type}--${test}${n > 1 ? `-${n}` : ''}.json`;
    await writeFile(path.join(dir, name), historyToJson(await handle.fetchHistory()));
  }
}
