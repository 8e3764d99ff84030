// How every compute activity runs on its worker: a heartbeat on a timer from start to end with
// the progress it reported last, cancellation reported as such, and host errors classified.
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { classifyHostError } from '../../lib/compute-errors.js';
import type { Progress } from '../../lib/progress.js';

/**
 * How often every compute activity heartbeats, whatever it is doing: well within the workflows'
 * heartbeat timeout, so that a step that moves no bytes (a define, a destroy, a stalled transfer)
 * is not taken for a dead worker, and a cancellation reaches the activity within seconds.
 */
const HEARTBEAT_INTERVAL_MS = 5000;

/** The details each running activity reported last: its heartbeat timer sends them again. */
const reported = new WeakMap<Context, Progress>();

/** Replaces the running activity's heartbeat details, and sends them now. */
export function reportProgress(progress: Progress): void {
  const context = Context.current();
  reported.set(context, progress);
  context.heartbeat(progress);
}

/** Reports the bytes a transfer moved, at most twice a second (a digest calls it for every chunk). */
export function byteProgress(step: string, bytesTotal?: number): (bytesDone: number) => void {
  let last = 0;
  return (bytesDone) => {
    const now = Date.now();
    if (now - last < 500 && bytesDone !== bytesTotal) return;
    last = now;
    reportProgress({ step, bytesDone, bytesTotal });
  };
}

/** The instance an activity's argument names ({ instanceUuid } or { instance }), if any. */
function instanceOf(argument: unknown): string | undefined {
  const { instanceUuid, instance } = (argument ?? {}) as { instanceUuid?: string; instance?: { uuid?: string } };
  return instanceUuid ?? instance?.uuid;
}

/**
 * A failure of libvirt, qemu-img or the host's disk as an ApplicationFailure of its class (lib/
 * compute-errors.ts): non-retryable where the same attempt would fail the same way, with the
 * tool's own reason. Failures already typed, and cancellations, pass as they are.
 */
function hostFailure(error: unknown, host: string, step: string, instanceUuid: string | undefined): unknown {
  if (error instanceof ApplicationFailure || error instanceof CancelledFailure) return error;
  const known = classifyHostError(error);
  if (!known) return error;
  return ApplicationFailure.create({
    type: known.type,
    message: `${step}${instanceUuid ? ` of instance ${instanceUuid}` : ''} on host ${host} failed: ${known.reason}`,
    nonRetryable: !known.retryable,
    cause: error as Error,
  });
}

type Activity = (...args: never[]) => Promise<unknown>;

/**
 * Every activity of a compute host as it runs on the worker: heartbeating on a timer from start to
 * end with the details it reported last, and failing with its host's errors classified. A retry
 * starts from the `uploaded` of the attempt before it, so that this survives the retry's own
 * heartbeats until the retry reports progress of its own.
 */
export function computeActivities<T extends Record<string, Activity>>(host: string, activities: T): T {
  const wrapped = Object.entries(activities).map(([name, activity]) => [
    name,
    async (...args: Parameters<typeof activity>) => {
      const context = Context.current();
      const { uploaded } = (context.info.heartbeatDetails ?? {}) as Progress;
      reported.set(context, { step: name, ...(uploaded && { uploaded }) });
      const beat = () => context.heartbeat(reported.get(context));
      beat();
      const timer = setInterval(beat, HEARTBEAT_INTERVAL_MS);
      try {
        return await activity(...args);
      } catch (error) {
        // Whatever broke once the step was cancelled (an aborted upload, a killed qemu-img), the
        // workflow is told the step was cancelled: it rolls back, and its action says Cancelled.
        if (context.cancellationSignal.aborted) throw context.cancellationSignal.reason;
        throw hostFailure(error, host, name, instanceOf(args[0]));
      } finally {
        clearInterval(timer);
      }
    },
  ]);
  return Object.fromEntries(wrapped) as T;
}
