// Work that must run to its end although the workflow was cancelled: a rollback, a release, the
// actions log, the steps after an action took effect.
import { CancellationScope } from '@temporalio/workflow';
import { applicationFailureOf } from './failures.js';

/**
 * Runs `work` to its end although the workflow was cancelled (the Web UI's Cancel,
 * `temporal workflow cancel`). In a cancelled scope an activity would be refused before it was
 * even scheduled, and the instance would stay claimed.
 */
export function settling<T>(work: () => Promise<T>): Promise<T> {
  return CancellationScope.nonCancellable(work);
}

/**
 * Runs an action's body; on failure runs its roll-back, then fails the workflow with the
 * activity's own failure so the reason is the first thing the Web UI and the CLI show.
 */
export async function withRollback<T>(body: () => Promise<T>, rollback: (error: unknown) => Promise<void>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    await settling(() => rollback(applicationFailureOf(error)));
    throw applicationFailureOf(error);
  }
}
