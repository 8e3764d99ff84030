// The instance actions log (Nova's instance_actions and instance_action_events): an action's row
// starts with the claim, in the transaction that takes the instance; each step of it becomes an
// event with its own start, finish, result and traceback.
import type { Pool, PoolClient } from 'pg';

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

/**
 * Starts the action's row, naming its workflow; a retry finds it there. Who asked defaults to
 * the instance's owner.
 */
export async function actionStart(
  client: PoolClient,
  action: {
    instanceUuid: string;
    action: string;
    requestId: string;
    userId?: string;
    projectId?: string;
    workflowId: string | null;
  },
): Promise<void> {
  await client.query(
    `INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id, workflow_id)
     SELECT uuid, $2, $3, coalesce($4, user_id), coalesce($5, project_id), $6 FROM instances WHERE uuid = $1
     ON CONFLICT (request_id) DO NOTHING`,
    [
      action.instanceUuid,
      action.action,
      action.requestId,
      action.userId ?? null,
      action.projectId ?? null,
      action.workflowId,
    ],
  );
}

/** Starts a step of the action; a step started again (a retry) starts over. */
export async function actionEventStart(
  pool: Pool,
  { requestId, event, host }: { requestId: string; event: string; host: string | null },
): Promise<void> {
  await pool.query(
    `INSERT INTO instance_action_events (action_id, event, host)
     SELECT id, $2, $3 FROM instance_actions WHERE request_id = $1
     ON CONFLICT (action_id, event) DO UPDATE
       SET start_time = now(), finish_time = NULL, result = NULL, traceback = NULL, host = EXCLUDED.host`,
    [requestId, event, host],
  );
}

/** Ends a step of the action; how long it took, in seconds, when it was found. */
export async function actionEventFinish(
  pool: Pool,
  finish: { requestId: string; event: string; result: EventResult; traceback?: string },
): Promise<number | null> {
  const { rows } = await pool.query<{ seconds: number }>(
    `UPDATE instance_action_events e SET finish_time = now(), result = $3, traceback = $4
     FROM instance_actions a WHERE e.action_id = a.id AND a.request_id = $1 AND e.event = $2
     RETURNING extract(epoch FROM e.finish_time - e.start_time)::float AS seconds`,
    [finish.requestId, finish.event, finish.result, finish.traceback ?? null],
  );
  return rows[0]?.seconds ?? null;
}

/**
 * Ends the action; one that did not succeed may say why (`reason`), and the steps it left open
 * (its workflow terminated) end as Error with it. Returns the action's name, when it was found.
 */
export async function actionFinish(
  pool: Pool,
  { requestId, result, reason }: { requestId: string; result: ActionResult; reason?: string },
): Promise<string | null> {
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
  return rows[0]?.action ?? null;
}

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
