// What every action workflow reads first: an input that may come from anywhere (the API, the CLI,
// the Temporal CLI or Web UI), checked; and the search attributes the Web UI lists it by.
import { ApplicationFailure, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import { ComputeHost, InstanceAction, InstanceUuid } from '../lib/temporal.js';

export interface ActionInput {
  instanceUuid: string;
  /**
   * Nova's request id; defaults to one derived from the workflow's first run, which a reset (a
   * new run replaying the old one's history) keeps: the new run then still holds the claim.
   */
  requestId?: string;
  /** Who asked, for the actions log; the instance's owner when not given. */
  userId?: string;
  projectId?: string;
}

/** Checks a workflow input that may come from anywhere (the Temporal CLI included). */
export function checkedInput<T extends ActionInput>(workflow: string, input: T): T & { requestId: string } {
  if (typeof input !== 'object' || input === null || typeof input.instanceUuid !== 'string') {
    throw ApplicationFailure.create({
      type: 'InvalidInput',
      message: `${workflow} expects an input like {"instanceUuid": "<uuid>"}, got ${JSON.stringify(input)}`,
      nonRetryable: true,
    });
  }
  return { ...input, requestId: input.requestId ?? `req-${workflowInfo().firstExecutionRunId}` };
}

/** A whole number of seconds, at least `min`, from an input that may come from anywhere. */
export function checkedSeconds(workflow: string, name: string, value: unknown, min: number): number | undefined {
  if (value === undefined || (Number.isInteger(value) && (value as number) >= min)) return value as number | undefined;
  throw ApplicationFailure.create({
    type: 'InvalidInput',
    message: `${workflow}: ${name} must be a whole number of seconds >= ${min}, got ${JSON.stringify(value)}`,
    nonRetryable: true,
  });
}

export function tagWorkflow(tags: { instanceUuid?: string; action?: string; host?: string | null }): void {
  const pairs = [];
  if (tags.instanceUuid) pairs.push({ key: InstanceUuid, value: tags.instanceUuid });
  if (tags.action) pairs.push({ key: InstanceAction, value: tags.action });
  if (tags.host) pairs.push({ key: ComputeHost, value: tags.host });
  // Temporal refuses an upsert of nothing (an offloaded instance has no host to tag).
  if (pairs.length > 0) upsertSearchAttributes(pairs);
}
