// Names shared by the workflows and the clients that start them. Workflow-safe: no I/O.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { Action } from './actions.js';

/** Task queue of a compute host's worker: hypervisor work runs only there. */
export function computeTaskQueue(host: string): string {
  return `compute@${host}`;
}

/** Readable workflow ids derived from the instance uuid, e.g. shelve-6f1c…, so the Web UI finds them. */
export function workflowId(action: Action, instanceUuid: string): string {
  return `${action}-${instanceUuid}`;
}

/**
 * The durable timer that offloads a shelved instance after shelved_offload_time: one per shelve,
 * named after the instance and that shelve's snapshot image.
 */
export function offloadTimerWorkflowId(instanceUuid: string, shelvedImageId: string): string {
  return `shelvedOffloadTimer-${instanceUuid}-${shelvedImageId}`;
}

// Custom search attributes (registered by scripts/stack) that make every action on a VM filterable.
export const InstanceUuid = defineSearchAttributeKey('InstanceUuid', SearchAttributeType.KEYWORD);
export const ComputeHost = defineSearchAttributeKey('ComputeHost', SearchAttributeType.KEYWORD);
export const InstanceAction = defineSearchAttributeKey('InstanceAction', SearchAttributeType.KEYWORD);
