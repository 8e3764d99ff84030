// The instance actions log, written by the conductor as local activities (lib/db/instance-actions.ts),
// with the metrics of each step and action that ends.
import type { Pool } from 'pg';
import {
  type ActionResult,
  actionEventFinish,
  actionEventStart,
  actionFinish,
  type EventResult,
} from '../lib/db/instance-actions.js';
import { actionsFinished, stepDuration } from '../lib/metrics.js';
import { sqlErrorsClassified } from '../lib/sql-errors.js';

export function createActionLogActivities(pool: Pool) {
  return sqlErrorsClassified({
    async startActionEvent(start: { requestId: string; event: string; host: string | null }) {
      await actionEventStart(pool, start);
    },

    async finishActionEvent(finish: { requestId: string; event: string; result: EventResult; traceback?: string }) {
      const seconds = await actionEventFinish(pool, finish);
      if (seconds !== null) stepDuration.observe({ event: finish.event, result: finish.result }, seconds);
    },

    /**
     * Ends the action; one that did not succeed may say why (`reason`: who cancelled it, what the
     * reconciler found), and the steps it left open (its workflow terminated) end as Error with it.
     */
    async finishAction(finish: { requestId: string; result: ActionResult; reason?: string }) {
      const action = await actionFinish(pool, finish);
      if (action !== null) actionsFinished.inc({ action, result: finish.result });
    },
  });
}

export type ActionLogActivities = ReturnType<typeof createActionLogActivities>;
