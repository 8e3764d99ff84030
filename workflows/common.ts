// What every action workflow does the same way: read its input, tag itself for the Web UI,
// and fail with the readable reason rather than a wrapper.
import { ActivityFailure, ApplicationFailure } from '@temporalio/common';
import { setCurrentDetails, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { ComputeHost, InstanceAction, InstanceUuid } from '../lib/temporal.js';

export interface ActionInput {
  instanceUuid: string;
  /** Nova's request id; defaults to one derived from the workflow run. */
  requestId?: string;
}

/** Checks a workflow input that may come from anywhere (the Temporal CLI included). */
export function checkedInput<T extends ActionInput>(workflow: string, input: T): T & { requestId: string } {
  if (typeof input !== 'object' || input === null || typeof input.instanceUuid !== 'string') {
    throw ApplicationFailure.create({
      type: 'InvalidInput',
      message: `${workflow} expects an input like {"instanceUuid": "<uuid>"}, got ${JSON.stringify(input)}`,
      nonRetryable: true,
    });
  }
  return { ...input, requestId: input.requestId ?? `req-${workflowInfo().runId}` };
}

export function tagWorkflow(tags: { instanceUuid?: string; action?: string; host?: string | null }): void {
  const pairs = [];
  if (tags.instanceUuid) pairs.push({ key: InstanceUuid, value: tags.instanceUuid });
  if (tags.action) pairs.push({ key: InstanceAction, value: tags.action });
  if (tags.host) pairs.push({ key: ComputeHost, value: tags.host });
  upsertSearchAttributes(pairs);
}

/** Names the step the workflow is in, for the Web UI's current details and the logs. */
export function step(description: string): void {
  setCurrentDetails(description);
}

/** An activity's own ApplicationFailure (e.g. "Cannot 'shelve' instance … while it is in …"). */
export function reason(error: unknown): unknown {
  return error instanceof ActivityFailure && error.cause instanceof ApplicationFailure ? error.cause : error;
}

/**
 * Runs an action's body; on failure runs its roll-back, then fails the workflow with the
 * activity's own failure so the reason is the first thing the Web UI and the CLI show.
 */
export async function withRollback<T>(body: () => Promise<T>, rollback: () => Promise<void>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    await rollback();
    throw reason(error);
  }
}
