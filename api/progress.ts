// The progress of a running action, read from its workflow in Temporal by the API: clients (the
// vm-shelve CLI among them) see it through GET /servers/{id}/os-instance-actions/{request_id} and
// need no Temporal access of their own.
import { type Client, WorkflowNotFoundError } from '@temporalio/client';
import type { Pool } from 'pg';
import type { InstanceActionRecord } from '../lib/db/instance-actions.js';
import { currentProgress } from '../lib/actions.js';
import { logger } from '../lib/logger.js';

export interface ActionProgress {
  /** What the current step is doing, e.g. `upload`; null between steps or when not known. */
  step: string | null;
  /** Bytes of disk data moved so far and in all, while a step moves disk data. */
  bytesDone: number | null;
  bytesTotal: number | null;
  /** False when the action's workflow ended without finishing the action (terminated, say). */
  running: boolean;
}

const unknown: ActionProgress = { step: null, bytesDone: null, bytesTotal: null, running: true };

async function finished(pool: Pool, requestId: string): Promise<boolean> {
  const { rows } = await pool.query<{ finished: boolean }>(
    'SELECT finish_time IS NOT NULL AS finished FROM instance_actions WHERE request_id = $1',
    [requestId],
  );
  return rows[0]?.finished ?? true;
}

/**
 * The action's progress while it runs; null once it has finished (its `message` then tells how).
 * Heartbeat details beyond the step and its byte counts stay in the API; so does the compute
 * host's name, unless `showHost` (admins).
 */
export async function actionProgress(
  client: Client,
  pool: Pool,
  action: InstanceActionRecord,
  showHost: boolean,
): Promise<ActionProgress | null> {
  if (action.finishTime !== null) return null;
  if (!action.workflowId) return unknown;
  const handle = client.workflow.getHandle(action.workflowId);
  try {
    const { status } = await handle.describe();
    if (status.name !== 'RUNNING') {
      // It may have finished the action between the read of the action and this one.
      return (await finished(pool, action.requestId)) ? null : { ...unknown, running: false };
    }
    const progress = await currentProgress(handle, { showHost });
    return {
      step: progress?.step ?? null,
      bytesDone: progress?.bytesDone ?? null,
      bytesTotal: progress?.bytesTotal ?? null,
      running: true,
    };
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) {
      return (await finished(pool, action.requestId)) ? null : { ...unknown, running: false };
    }
    // Temporal unreachable: the actions log still answers, without progress.
    logger.warn({ err: error, workflowId: action.workflowId }, 'action progress not read from Temporal');
    return unknown;
  }
}
