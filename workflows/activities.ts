// The activities the workflows call, with the timeouts and retries each kind of work needs.
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  proxyActivities,
  proxyLocalActivities,
  TimeoutFailure,
} from '@temporalio/workflow';
// The one SDK name workflow code needs that @temporalio/workflow does not re-export.
import { TimeoutType } from '@temporalio/common';
import type { ActionLogActivities } from '../activities/action-log.js';
import type { ComputeActivities } from '../activities/compute/index.js';
import type { DatabaseActivities } from '../activities/database.js';
import type { ImageActivities } from '../activities/images.js';
import type { ReconcilerActivities } from '../activities/reconciler.js';
import type { SettingsActivities } from '../activities/settings.js';
import type { TemporalActivities } from '../activities/temporal.js';
import { computeTaskQueue } from '../lib/temporal.js';

/**
 * Backoff from 1 s to 30 s, and a bound: a failure that retrying cannot fix ends in the action's
 * rollback after about 8 minutes (20 attempts), not in an instance claimed for ever.
 */
const retry = {
  initialInterval: '1 second',
  backoffCoefficient: 2,
  maximumInterval: '30 seconds',
  maximumAttempts: 20,
};

/**
 * A cancelled workflow waits for a step already running to end before it goes on: its rollback
 * then sees what the step did (a save that committed, a domain that was made) and never undoes a
 * step while it still runs. A compute step hears of the cancel at its next heartbeat (5 s).
 */
const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;

export const database = proxyActivities<DatabaseActivities>({
  startToCloseTimeout: '30 seconds',
  retry,
  cancellationType,
});
export const settings = proxyActivities<SettingsActivities>({
  startToCloseTimeout: '10 seconds',
  retry,
  cancellationType,
});
export const images = proxyActivities<ImageActivities>({ startToCloseTimeout: '2 minutes', retry, cancellationType });
/**
 * Bookkeeping and the reconciler's work on one item each: a few attempts, so that one bad item
 * does not hold up the rest; the next reconcile tries it again.
 */
const fewAttempts = { ...retry, maximumAttempts: 3 };
export const temporal = proxyActivities<TemporalActivities>({ startToCloseTimeout: '30 seconds', retry: fewAttempts });
export const reconciler = proxyActivities<ReconcilerActivities>({
  startToCloseTimeout: '1 minute',
  retry: fewAttempts,
});
/** Local: a row per step is bookkeeping, not worth a round trip through a task queue. */
export const actionLog = proxyLocalActivities<ActionLogActivities>({ startToCloseTimeout: '10 seconds', retry });

export type ComputeHosts = (host: string) => ComputeActivities;

/**
 * A step no worker took in time (its host's compute worker is down, or was never started), as the
 * readable, non-retryable failure the action rolls back on; any other failure as it is.
 */
export function hostUnavailable(error: unknown, host: string): unknown {
  const timedOut =
    error instanceof ActivityFailure &&
    error.cause instanceof TimeoutFailure &&
    error.cause.timeoutType === TimeoutType.SCHEDULE_TO_START;
  return timedOut
    ? ApplicationFailure.create({
        type: 'ComputeHostUnavailable',
        message: `Compute host ${host} did not take the step ${error.activityType} in time: is its compute worker running?`,
        nonRetryable: true,
        cause: error,
      })
    : error;
}

/**
 * Activities on compute hosts, each sent to its host's own task queue. Disk copies take long, so
 * they heartbeat: a dead host is noticed within the heartbeat timeout, not at the end of the copy.
 * A step no worker takes within `hostTimeout` seconds fails (recordStep names it: hostUnavailable).
 */
export function computeHosts(hostTimeout: number): ComputeHosts {
  return (host) =>
    proxyActivities<ComputeActivities>({
      taskQueue: computeTaskQueue(host),
      scheduleToStartTimeout: `${hostTimeout} seconds`,
      // Liveness comes from the heartbeat; the day is only an outer bound, which no disk reaches.
      startToCloseTimeout: '1 day',
      heartbeatTimeout: '30 seconds',
      cancellationType,
      // Each attempt of a disk copy may take long: fewer of them.
      retry: { ...retry, maximumAttempts: 10 },
    });
}

/** computeHosts with the conductor's configured deadline. */
export async function configuredComputeHosts(): Promise<ComputeHosts> {
  return computeHosts((await settings.conductorSettings()).computeHostTimeout);
}
