// Nova's actions log, written as the workflow goes: one action per claimed request, one event per
// step, each with its result (os-instance-actions shows them).
import { isCancellation, setCurrentDetails } from '@temporalio/workflow';
import { actionLog, hostUnavailable, temporal } from './activities.js';
import { applicationFailureOf } from './failures.js';
import { settling } from './rollback.js';

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
export async function recordStep<T>(
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
      actionLog.finishActionEvent({
        requestId,
        event: name,
        result: 'Error',
        traceback: traceback(applicationFailureOf(error)),
      }),
    );
    throw error;
  }
}

/**
 * Runs a claimed action to its end, recording in the actions log whether it succeeded. On any
 * failure, a cancellation included, `settle` leaves the instance free for the next action (its
 * rollbacks may have done so already: it must be idempotent).
 */
export async function recordAction<T>(
  requestId: string,
  body: () => Promise<T>,
  settle: () => Promise<void>,
): Promise<T> {
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
