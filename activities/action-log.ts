// The instance actions log, written by the conductor as local activities: each step of an action
// becomes an event with its own start, finish, result and traceback. The action row itself is
// written by the claim, in the same transaction that takes the instance.
import type { Pool } from 'pg';
import { actionsFinished, stepDuration } from '../lib/metrics.js';
import { sqlErrorsClassified } from '../lib/sql-errors.js';

export type EventResult = 'Success' | 'Error';
/** How an action ended; its message in the actions log, as Nova's 'Error', when not a success. */
export type ActionResult = EventResult | 'Cancelled';

export interface ActionEvent {
  event: string;
  host: string | null;
  startTime: string;
  finishTime: string | null;
  result: EventResult | null;
  traceback: string | null;
}

export interface InstanceActionRecord {
  action: string;
  instanceUuid: string;
  requestId: string;
  userId: string;
  projectId: string;
  startTime: string;
  finishTime: string | null;
  message: string | null;
  /** Why an action that did not succeed ended so, when no step says (e.g. 'cancelled by <identity>'). */
  reason: string | null;
  /** The workflow that runs the action (null for actions recorded before it was kept). */
  workflowId: string | null;
  events: ActionEvent[];
}

export function createActionLogActivities(pool: Pool) {
  return sqlErrorsClassified({
    async startActionEvent({ requestId, event, host }: { requestId: string; event: string; host: string | null }) {
      await pool.query(
        `INSERT INTO instance_action_events (action_id, event, host)
         SELECT id, $2, $3 FROM instance_actions WHERE request_id = $1
         ON CONFLICT (action_id, event) DO UPDATE
           SET start_time = now(), finish_time = NULL, result = NULL, traceback = NULL, host = EXCLUDED.host`,
        [requestId, event, host],
      );
    },

    async finishActionEvent(finish: { requestId: string; event: string; result: EventResult; traceback?: string }) {
      const { rows } = await pool.query<{ seconds: number }>(
        `UPDATE instance_action_events e SET finish_time = now(), result = $3, traceback = $4
         FROM instance_actions a WHERE e.action_id = a.id AND a.request_id = $1 AND e.event = $2
         RETURNING extract(epoch FROM e.finish_time - e.start_time)::float AS seconds`,
        [finish.requestId, finish.event, finish.result, finish.traceback ?? null],
      );
      for (const { seconds } of rows) stepDuration.observe({ event: finish.event, result: finish.result }, seconds);
    },

    /**
     * Ends the action; one that did not succeed may say why (`reason`: who cancelled it, what the
     * reconciler found), and the steps it left open (its workflow terminated) end as Error with it.
     */
    async finishAction({ requestId, result, reason }: { requestId: string; result: ActionResult; reason?: string }) {
      const { rows } = await pool.query<{ action: string }>(
        `UPDATE instance_actions SET finish_time = now(), message = $2, reason = $3 WHERE request_id = $1
         RETURNING action`,
        [requestId, result === 'Success' ? null : result, reason ?? null],
      );
      if (result !== 'Success') {
        await pool.query(
          `UPDATE instance_action_events e SET finish_time = now(), result = 'Error', traceback = $2
           FROM instance_actions a WHERE e.action_id = a.id AND a.request_id = $1 AND e.finish_time IS NULL`,
          [requestId, reason ?? result],
        );
      }
      for (const { action } of rows) actionsFinished.inc({ action, result });
    },
  });
}

export type ActionLogActivities = ReturnType<typeof createActionLogActivities>;

/** An instance's actions, newest first, each with its events in the order they started. */
export async function listInstanceActions(pool: Pool, instanceUuid: string): Promise<InstanceActionRecord[]> {
  const { rows } = await pool.query(
    `SELECT a.*, coalesce(json_agg(json_build_object(
         'event', e.event, 'host', e.host, 'startTime', e.start_time, 'finishTime', e.finish_time,
         'result', e.result, 'traceback', e.traceback) ORDER BY e.start_time, e.id)
       FILTER (WHERE e.id IS NOT NULL), '[]') AS events
     FROM instance_actions a LEFT JOIN instance_action_events e ON e.action_id = a.id
     WHERE a.instance_uuid = $1 GROUP BY a.id ORDER BY a.start_time DESC, a.id DESC`,
    [instanceUuid],
  );
  return rows.map((row) => ({
    action: row.action,
    instanceUuid: row.instance_uuid,
    requestId: row.request_id,
    userId: row.user_id,
    projectId: row.project_id,
    startTime: (row.start_time as Date).toISOString(),
    finishTime: row.finish_time ? (row.finish_time as Date).toISOString() : null,
    message: row.message,
    reason: row.reason,
    workflowId: row.workflow_id,
    // json_agg gives PostgreSQL's timestamp text: made ISO like the action's own times.
    events: (row.events as ActionEvent[]).map((event) => ({
      ...event,
      startTime: new Date(event.startTime).toISOString(),
      finishTime: event.finishTime && new Date(event.finishTime).toISOString(),
    })),
  }));
}
