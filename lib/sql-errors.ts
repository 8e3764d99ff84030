// PostgreSQL errors sorted by SQLSTATE into what a retry can fix and what it cannot. A dropped
// connection, a serialization failure or a deadlock goes away on the next attempt; a constraint
// the data breaks, a value of the wrong type or a statement the schema does not take fails the
// same way every time, so the step fails at once and the action rolls back instead of retrying.
import { ApplicationFailure } from '@temporalio/common';

/**
 * SQLSTATE classes that no retry fixes (PostgreSQL's appendix A): feature not supported,
 * cardinality, data exception, integrity constraint violation, invalid transaction termination,
 * SQL routine exception, syntax error or access rule violation, WITH CHECK OPTION violation.
 */
const PERMANENT_CLASSES = new Set(['0A', '21', '22', '23', '2D', '2F', '42', '44']);

/** The SQLSTATE of a PostgreSQL error (node-postgres puts it in `code`), or null for any other error. */
export function sqlState(error: unknown): string | null {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : null;
}

/** A PostgreSQL error that retrying cannot fix, as a non-retryable failure naming it; others as they are. */
export function classifiedSqlError(error: unknown): unknown {
  const state = sqlState(error);
  if (state === null || !PERMANENT_CLASSES.has(state.slice(0, 2))) return error;
  const { message, constraint } = error as { message: string; constraint?: string };
  return ApplicationFailure.create({
    type: 'DatabaseRefused',
    message: `PostgreSQL refused the change (SQLSTATE ${state}${constraint ? `, constraint ${constraint}` : ''}): ${message}`,
    nonRetryable: true,
    details: [{ sqlState: state, constraint: constraint ?? null }],
  });
}

/** The same functions, each failing with classifiedSqlError's verdict on a PostgreSQL error. */
export function sqlErrorsClassified<T extends Record<string, (...args: never[]) => Promise<unknown>>>(functions: T): T {
  return Object.fromEntries(
    Object.entries(functions).map(([name, run]) => [
      name,
      (...args: never[]) =>
        run(...args).catch((error: unknown) => {
          throw classifiedSqlError(error);
        }),
    ]),
  ) as T;
}
