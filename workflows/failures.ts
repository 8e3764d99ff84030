// Failures as the user should read them: the activity's own ApplicationFailure ("Cannot 'shelve'
// instance … while it is in …"), not the ActivityFailure Temporal wraps it in.
import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';

/** The ApplicationFailure an activity failed with, or `error` itself when it is something else. */
export function applicationFailureOf(error: unknown): unknown {
  return error instanceof ActivityFailure && error.cause instanceof ApplicationFailure ? error.cause : error;
}

/** True when `error` is, or is an activity's failure caused by, an ApplicationFailure of `type`. */
export function isFailure(error: unknown, type: string): boolean {
  const failure = applicationFailureOf(error);
  return failure instanceof ApplicationFailure && failure.type === type;
}
