// What every action workflow does the same way: read its input, tag itself for the Web UI,
// and fail with the readable reason rather than a wrapper.
import { ActivityFailure, ApplicationFailure } from '@temporalio/common';
import {
  CancellationScope,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  setCurrentDetails,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { ComputeHost, InstanceAction, InstanceUuid, offloadTimerWorkflowId } from '../lib/temporal.js';
import type { ClaimRequest } from '../activities/database.js';
import type { Instance } from '../lib/nova.js';
import { actionLog, database, hostUnavailable, images, temporal } from './activities.js';

export interface ActionInput {
  instanceUuid: string;
  /** Nova's request id; defaults to one derived from the workflow run. */
  requestId?: string;
  /** Who asked, for the actions log; the instance's owner when not given. */
  userId?: string;
  projectId?: string;
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
  // Temporal refuses an upsert of nothing (an offloaded instance has no host to tag).
  if (pairs.length > 0) upsertSearchAttributes(pairs);
}

/** Names the step the workflow is in, for the Web UI's current details and the logs. */
export function step(description: string): void {
  setCurrentDetails(description);
}

/** The failure chain as text, deepest stack last: an event's traceback. */
function traceback(error: unknown): string {
  const lines: string[] = [];
  let stack = '';
  for (let failure: unknown = error; failure instanceof Error; failure = failure.cause) {
    lines.push(`${failure.name}: ${failure.message}`);
    if (failure.stack) stack = failure.stack;
  }
  return [...lines, stack].join('\n');
}

/**
 * Runs one step of an action as an event of the actions log: its start, its finish with Success,
 * or Error with the traceback. `details` is what the Web UI shows as the workflow's current step.
 */
export async function inEvent<T>(
  event: { requestId: string; name: string; host: string | null; details: string },
  body: () => Promise<T>,
): Promise<T> {
  setCurrentDetails(event.details);
  const { requestId, name } = event;
  await actionLog.startActionEvent({ requestId, event: name, host: event.host });
  try {
    const result = await body();
    // Done is done, cancelled or not: the step's own record says so.
    await settling(() => actionLog.finishActionEvent({ requestId, event: name, result: 'Success' }));
    return result;
  } catch (caught) {
    const error = event.host ? hostUnavailable(caught, event.host) : caught;
    await settling(() =>
      actionLog.finishActionEvent({ requestId, event: name, result: 'Error', traceback: traceback(reason(error)) }),
    );
    throw error;
  }
}

/**
 * Work that must run to its end although the workflow was cancelled (the Web UI's Cancel,
 * `temporal workflow cancel`): a rollback, a release, the actions log. In a cancelled scope an
 * activity would be refused before it was even scheduled, and the instance would stay claimed.
 */
export function settling<T>(work: () => Promise<T>): Promise<T> {
  return CancellationScope.nonCancellable(work);
}

/**
 * Runs a claimed action to its end, recording in the actions log whether it succeeded. On any
 * failure, a cancellation included, `settle` leaves the instance free for the next action (its
 * rollbacks may have done so already: it must be idempotent).
 */
export async function inAction<T>(requestId: string, body: () => Promise<T>, settle: () => Promise<void>): Promise<T> {
  try {
    const result = await body();
    await settling(() => actionLog.finishAction({ requestId, result: 'Success' }));
    return result;
  } catch (error) {
    await settling(async () => {
      await settle();
      if (!isCancellation(error)) return actionLog.finishAction({ requestId, result: 'Error' });
      // Who cancelled is bookkeeping: a history Temporal cannot read now leaves the action Cancelled.
      const requester = await temporal.cancelRequester().catch(() => null);
      await actionLog.finishAction({
        requestId,
        result: 'Cancelled',
        ...(requester ? { reason: `cancelled by ${requester}` } : {}),
      });
    });
    throw error;
  }
}

/** An activity's own ApplicationFailure (e.g. "Cannot 'shelve' instance … while it is in …"). */
export function reason(error: unknown): unknown {
  return error instanceof ActivityFailure && error.cause instanceof ApplicationFailure ? error.cause : error;
}

/** True when `error` is, or is an activity's failure caused by, an ApplicationFailure of `type`. */
export function isFailure(error: unknown, type: string): boolean {
  const failure = reason(error);
  return failure instanceof ApplicationFailure && failure.type === type;
}

/** Claims the instance for an action; a refusal fails the workflow with its own readable reason. */
export function claim(request: ClaimRequest): Promise<Instance> {
  return database.claimInstance(request).catch((error: unknown) => Promise.reject(reason(error)));
}

/** A whole number of seconds, at least `min`, from an input that may come from anywhere. */
export function checkedSeconds(workflow: string, name: string, value: unknown, min: number): number | undefined {
  if (value === undefined || (Number.isInteger(value) && (value as number) >= min)) return value as number | undefined;
  throw ApplicationFailure.create({
    type: 'InvalidInput',
    message: `${workflow}: ${name} must be a whole number of seconds >= ${min}, got ${JSON.stringify(value)}`,
    nonRetryable: true,
  });
}

/**
 * Runs an action's body; on failure runs its roll-back, then fails the workflow with the
 * activity's own failure so the reason is the first thing the Web UI and the CLI show.
 */
export async function withRollback<T>(body: () => Promise<T>, rollback: (error: unknown) => Promise<void>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    await settling(() => rollback(reason(error)));
    throw reason(error);
  }
}

/**
 * Ends the offload timer a shelve started, when an action takes the shelved instance first: the
 * claim already keeps a stale timer from acting; this just ends it. It may have ended on its own.
 */
export async function cancelOffloadTimer(instanceUuid: string, imageId: string): Promise<void> {
  await getExternalWorkflowHandle(offloadTimerWorkflowId(instanceUuid, imageId))
    .cancel()
    .catch(() => undefined);
}

/**
 * Deletes the instance's shelve snapshot, as an event of the action. Best effort, as in Nova:
 * an unshelved instance must stay running, a deleted one gone, whatever Glance answers.
 */
export async function deleteSnapshotImage(requestId: string, instance: Instance, imageId: string): Promise<void> {
  await inEvent(
    { requestId, name: 'delete_snapshot_image', host: null, details: `deleting snapshot image ${imageId}` },
    () =>
      images
        .deleteSnapshotImage({ imageId })
        .catch((error: unknown) => log.warn('snapshot image not deleted', { imageId, error: String(reason(error)) })),
  );
}
