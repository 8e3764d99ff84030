// Starting an action's workflow from a client (the API, the CLI, the demo, the tests), and watching
// the instance change while it runs.
import { setTimeout as sleep } from 'node:timers/promises';
import { type Client, decodePendingActivityState, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { Pool } from 'pg';
import { getInstance } from './db/instances.js';
import type { Progress } from './progress.js';
import type { Config } from './config.js';
import type { Instance } from './nova.js';
import { ComputeHost, workflowId } from './temporal.js';
import type {
  buildInstance,
  deleteInstance,
  shelveInstance,
  shelveOffloadInstance,
  unshelveInstance,
} from '../workflows/index.js';

const WORKFLOWS = {
  build: 'buildInstance',
  shelve: 'shelveInstance',
  shelveOffload: 'shelveOffloadInstance',
  unshelve: 'unshelveInstance',
  delete: 'deleteInstance',
} as const;

interface ActionInputs {
  build: Parameters<typeof buildInstance>[0] & { instanceUuid: string };
  shelve: Parameters<typeof shelveInstance>[0];
  shelveOffload: Parameters<typeof shelveOffloadInstance>[0];
  unshelve: Parameters<typeof unshelveInstance>[0];
  delete: Parameters<typeof deleteInstance>[0];
}
export type Action = keyof ActionInputs;

export function startAction<A extends Action>(
  client: Client,
  config: Config,
  action: A,
  input: ActionInputs[A],
): Promise<WorkflowHandle> {
  return client.workflow.start(WORKFLOWS[action], {
    taskQueue: config.temporal.conductorTaskQueue,
    workflowId: workflowId(action, input.instanceUuid),
    args: [input],
    staticSummary: `${action} instance ${input.instanceUuid}`,
  });
}

/** How long a step may sit unclaimed before it is reported as waiting for its worker. */
const UNCLAIMED_AFTER_MS = 1000;

/**
 * The progress of the action's current step: what a running activity last reported in its
 * heartbeat, or, for a step no worker has taken yet, that it waits for the compute host's worker
 * (which COMPUTE_HOST_TIMEOUT bounds), named unless `showHost` is false (hosts are for admins).
 */
export async function currentProgress(
  handle: WorkflowHandle,
  { showHost = true }: { showHost?: boolean } = {},
): Promise<Progress | undefined> {
  const description = await handle.describe();
  for (const activity of description.raw.pendingActivities ?? []) {
    const payload = activity.heartbeatDetails?.payloads?.[0];
    if (payload) return defaultPayloadConverter.fromPayload<Progress>(payload);
    const scheduled = activity.scheduledTime ? Number(activity.scheduledTime.seconds) * 1000 : Date.now();
    if (decodePendingActivityState(activity.state) === 'SCHEDULED' && Date.now() - scheduled > UNCLAIMED_AFTER_MS) {
      const host = description.typedSearchAttributes.get(ComputeHost);
      const worker = host ? (showHost ? `compute host ${host}` : 'the compute host') : 'a worker';
      const seconds = Math.round((Date.now() - scheduled) / 1000);
      return {
        step: `waiting ${seconds}s for ${worker} to take ${activity.activityType?.name ?? 'the step'}`,
      };
    }
  }
  return undefined;
}

export interface InstanceSnapshot {
  instance: Instance;
  progress?: Progress;
}

/**
 * Calls `onChange` each time the instance's states or the action's progress change, until the
 * workflow ends; returns its result (or throws its failure).
 */
export async function watchAction(
  handle: WorkflowHandle,
  pool: Pool,
  instanceUuid: string,
  onChange: (snapshot: InstanceSnapshot) => void,
): Promise<Instance> {
  const result = handle.result() as Promise<Instance>;
  let done = false;
  result.then(
    () => (done = true),
    () => (done = true),
  );
  let last = '';
  while (!done) {
    const instance = await getInstance(pool, instanceUuid).catch(() => undefined);
    const progress = await currentProgress(handle).catch(() => undefined);
    if (instance) {
      const key = JSON.stringify([instance.vmState, instance.taskState, instance.powerState, instance.host, progress]);
      if (key !== last) onChange({ instance, progress });
      last = key;
    }
    await Promise.race([result.catch(() => undefined), sleep(250)]);
  }
  return result;
}
