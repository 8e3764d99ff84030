// The activities the workflows call, with the timeouts and retries each kind of work needs.
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { ActionLogActivities } from '../activities/action-log.js';
import type { ComputeActivities } from '../activities/compute.js';
import type { DatabaseActivities } from '../activities/database.js';
import type { ImageActivities } from '../activities/images.js';
import type { SettingsActivities } from '../activities/settings.js';
import { computeTaskQueue } from '../lib/temporal.js';

const retry = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' };

export const database = proxyActivities<DatabaseActivities>({ startToCloseTimeout: '30 seconds', retry });
export const settings = proxyActivities<SettingsActivities>({ startToCloseTimeout: '10 seconds', retry });
export const images = proxyActivities<ImageActivities>({ startToCloseTimeout: '2 minutes', retry });
/** Local: a row per step is bookkeeping, not worth a round trip through a task queue. */
export const actionLog = proxyLocalActivities<ActionLogActivities>({ startToCloseTimeout: '10 seconds', retry });

/**
 * Activities on one compute host, sent to that host's own task queue. Disk copies take long, so
 * they heartbeat: a dead host is noticed within the heartbeat timeout, not at the end of the copy.
 */
export function compute(host: string) {
  return proxyActivities<ComputeActivities>({
    taskQueue: computeTaskQueue(host),
    startToCloseTimeout: '2 hours',
    heartbeatTimeout: '30 seconds',
    retry,
  });
}
