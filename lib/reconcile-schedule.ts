// The Temporal Schedule that runs the reconciler (workflows/reconcile.ts) every
// RECONCILE_INTERVAL seconds, made by the conductor worker as it starts.
import { type Client, ScheduleAlreadyRunning, ScheduleOverlapPolicy } from '@temporalio/client';
import type { Config } from './config.js';

export const RECONCILE_SCHEDULE_ID = 'vm-shelve-reconciler';

/**
 * Creates the schedule, or brings an existing one to this configuration: any number of conductors
 * may start, one schedule runs. A run still going when the next is due makes that one skip.
 */
export async function ensureReconcileSchedule(
  client: Client,
  config: Config,
  scheduleId = RECONCILE_SCHEDULE_ID,
): Promise<void> {
  const schedule = {
    spec: { intervals: [{ every: `${config.reconcileInterval}s` }] },
    action: {
      type: 'startWorkflow' as const,
      workflowType: 'reconcileInstances',
      workflowId: scheduleId,
      taskQueue: config.temporal.conductorTaskQueue,
      args: [{}],
      staticSummary: 'release claims whose workflow is closed, sync power states, delete orphaned snapshots',
    },
    policies: { overlap: ScheduleOverlapPolicy.SKIP },
  };
  try {
    await client.schedule.create({ scheduleId, ...schedule });
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
    await client.schedule.getHandle(scheduleId).update((current) => ({ ...current, ...schedule }));
  }
}
