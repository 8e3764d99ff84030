// The conductor's activities on PostgreSQL: each calls the repository (lib/db) with the workflow
// that runs it as the claimant, and fails with a non-retryable failure on an error no retry fixes.
import { Context } from '@temporalio/activity';
import type { Pool } from 'pg';
import { computeHostDownReason } from '../lib/db/compute-services.js';
import { type CreateInstanceRequest, createInstance } from '../lib/db/instances.js';
import {
  type DestinationRequest,
  type PlacementRequest,
  placeInstance,
  selectDestination,
} from '../lib/db/placement.js';
import {
  type ClaimRequest,
  claimInstance,
  markInstanceDeleted,
  releaseInstance,
  type SaveRequest,
  saveInstance,
} from '../lib/db/task-states.js';
import type { PowerState } from '../lib/nova.js';
import { sqlErrorsClassified } from '../lib/sql-errors.js';

/**
 * The workflow that scheduled this activity, as Temporal records it: a claim is for it, whatever
 * workflow the input names, so no input can take over another workflow's claim.
 */
function runningWorkflowId(): string | undefined {
  return Context.current().info.workflowExecution?.workflowId;
}

export function createDatabaseActivities(pool: Pool) {
  return sqlErrorsClassified({
    /** Why the host counts as down at this moment, or null while it is up (computeHostDownReason). */
    async computeHostDown({ host }: { host: string }) {
      return computeHostDownReason(pool, host);
    },

    /** claimInstance, for the workflow that runs this activity. */
    async claimInstance(claim: ClaimRequest) {
      return claimInstance(pool, { ...claim, workflowId: runningWorkflowId() });
    },

    async saveInstance(request: SaveRequest) {
      return saveInstance(pool, request);
    },

    async releaseInstance(release: {
      instanceUuid: string;
      requestId: string;
      /** The power_state the instance is left in, when the action changed it back. */
      powerState?: PowerState;
    }) {
      return releaseInstance(pool, release);
    },

    async markInstanceDeleted(deletion: { instanceUuid: string; requestId: string; localDelete?: boolean }) {
      return markInstanceDeleted(pool, deletion);
    },

    /** createInstance, held for the workflow that runs this activity. */
    async createInstance(request: CreateInstanceRequest) {
      return createInstance(pool, { ...request, workflowId: runningWorkflowId() });
    },

    async selectDestination(request: DestinationRequest) {
      return selectDestination(pool, request);
    },

    async placeInstance(request: PlacementRequest) {
      return placeInstance(pool, request);
    },
  });
}

export type DatabaseActivities = ReturnType<typeof createDatabaseActivities>;
