// Every write an action makes to an instance: a compare-and-swap on task_state (Nova's
// expected_task_state), by the request and workflow that claimed it, so two actions on one
// instance can never interleave.
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import { actionsStarted } from '../metrics.js';
import {
  ALLOWED_VM_STATES,
  CLAIM_TASK_STATE,
  type Instance,
  type InstanceAction,
  PowerState,
  TaskState,
  VmState,
} from '../nova.js';
import { actionStart } from './instance-actions.js';
import { getInstance, writeSystemMetadata } from './instances.js';
import { inTransaction } from './transactions.js';

export interface ClaimRequest {
  instanceUuid: string;
  action: InstanceAction;
  requestId: string;
  /** Claim only while this is still the instance's shelved_image_id (the offload timer's shelve). */
  shelvedImageId?: string;
  /** Who asked, for the actions log; the instance's owner when not given. */
  userId?: string;
  projectId?: string;
  /**
   * The workflow the claim is for: the API names the workflow it is about to start. The
   * claimInstance activity puts the workflow that runs it here, whatever its caller said.
   */
  workflowId?: string;
}

export interface InstanceChanges {
  vmState?: VmState;
  taskState?: TaskState | null;
  powerState?: PowerState;
  host?: string | null;
  node?: string | null;
  availabilityZone?: string | null;
  requestedAvailabilityZone?: string | null;
  /** Set launched_at to the database's now(). */
  launched?: boolean;
}

export interface SaveRequest {
  instanceUuid: string;
  requestId: string;
  /** task_states the instance may be in for the save to happen (null = no task). */
  expectedTaskStates: (TaskState | null)[];
  changes: InstanceChanges;
  setSystemMetadata?: Record<string, string>;
  removeSystemMetadata?: readonly string[];
}

/** The workflow that holds an instance's claim, if an action holds it (task_state set). */
export async function claimHolder(pool: Pool, instanceUuid: string): Promise<string | null> {
  const { rows } = await pool.query<{ workflow: string | null }>(
    'SELECT task_workflow_id AS workflow FROM instances WHERE uuid = $1 AND task_state IS NOT NULL',
    [instanceUuid],
  );
  return rows[0]?.workflow ?? null;
}

/**
 * Nova's os-resetState: the instance gets `vmState` and no task_state, whatever held it. Only
 * while the claim is still the one the caller found (`holder`): false when another action took it
 * meanwhile.
 */
export async function resetInstanceState(
  pool: Pool,
  instanceUuid: string,
  vmState: typeof VmState.ACTIVE | typeof VmState.ERROR,
  holder: string | null,
): Promise<boolean> {
  const { rowCount } = await pool.query(
    `UPDATE instances SET vm_state = $2, task_state = NULL, updated_at = now()
      WHERE uuid = $1 AND deleted_at IS NULL
        AND (task_state IS NULL OR task_workflow_id IS NOT DISTINCT FROM $3)`,
    [instanceUuid, vmState, holder],
  );
  return rowCount === 1;
}

/** Which attribute of the instance refuses the claim, and its value, for the failure. */
function refusal(current: Instance, claim: ClaimRequest): [attribute: string, value: string] {
  if (current.taskState !== null) return ['task_state', current.taskState];
  if (!(ALLOWED_VM_STATES[claim.action] as readonly VmState[]).includes(current.vmState)) {
    return ['vm_state', current.vmState];
  }
  if (current.launchedAt === null && claim.action !== 'delete') return ['launched_at', 'None'];
  return ['shelved_image_id', current.systemMetadata.shelved_image_id ?? 'None'];
}

/**
 * Claims the instance for an action: task_state := the action's task, only if the vm_state
 * allows the action and no other task runs. The claim records the request and the workflow it
 * is for; an existing claim passes again only for both (a retried activity, or the workflow the
 * API claimed for), so no workflow takes over another's claim by passing its request id.
 */
export async function claimInstance(pool: Pool, claim: ClaimRequest): Promise<Instance> {
  const { instanceUuid, action, requestId, shelvedImageId } = claim;
  const workflowId = claim.workflowId ?? null;
  const taskState = CLAIM_TASK_STATE[action];
  const instance = await getInstance(pool, instanceUuid);
  return inTransaction(pool, async (client) => {
    const { rowCount } = await client.query(
      `UPDATE instances SET task_state = $2, task_request_id = $3, task_workflow_id = $6, updated_at = now()
       WHERE uuid = $1
         AND ((task_state IS NULL AND vm_state = ANY($4) AND (launched_at IS NOT NULL OR $7)
               AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM instance_system_metadata
                 WHERE instance_uuid = $1 AND key = 'shelved_image_id' AND value = $5)))
              OR (task_request_id = $3 AND task_state = $2 AND task_workflow_id IS NOT DISTINCT FROM $6))`,
      // A server whose build failed never launched; it can still be deleted, as in Nova.
      [
        instanceUuid,
        taskState,
        requestId,
        ALLOWED_VM_STATES[action],
        shelvedImageId ?? null,
        workflowId,
        action === 'delete',
      ],
    );
    if (rowCount === 0) {
      const [attribute, value] = refusal(await getInstance(client, instanceUuid), claim);
      throw ApplicationFailure.create({
        type: attribute === 'task_state' ? 'UnexpectedTaskState' : 'InstanceInvalidState',
        message: `Cannot '${action}' instance ${instanceUuid} while it is in ${attribute} ${value}`,
        nonRetryable: true,
        details: [{ instanceUuid, attribute, value }],
      });
    }
    await actionStart(client, {
      instanceUuid,
      action,
      requestId,
      userId: claim.userId,
      projectId: claim.projectId,
      workflowId,
    });
    // A retry (or the workflow taking over the API's claim) is not a new action.
    if (instance.taskState === null) actionsStarted.inc({ action });
    if (action === 'shelve') {
      // Keeps the original image id for unshelve and rebuild (docs/nova-behaviour.md §1.3, bug 1893618).
      await writeSystemMetadata(client, instanceUuid, { image_base_image_ref: instance.imageRef });
    }
    return getInstance(client, instanceUuid);
  });
}

const COLUMN_OF: Record<Exclude<keyof InstanceChanges, 'launched'>, string> = {
  vmState: 'vm_state',
  taskState: 'task_state',
  powerState: 'power_state',
  host: 'host',
  node: 'node',
  availabilityZone: 'availability_zone',
  requestedAvailabilityZone: 'requested_availability_zone',
};

/**
 * The UPDATE of a save: the changed columns only, where the instance is still held by
 * `requestId` in one of the expected task_states, or already shows the new task_state (a retry
 * of a save that committed).
 */
export function saveStatement({ instanceUuid, requestId, expectedTaskStates, changes }: SaveRequest): {
  text: string;
  values: unknown[];
} {
  const assignments = ['updated_at = now()'];
  const values: unknown[] = [instanceUuid, requestId];
  for (const [field, column] of Object.entries(COLUMN_OF) as [keyof typeof COLUMN_OF, string][]) {
    if (changes[field] === undefined) continue;
    values.push(changes[field]);
    assignments.push(`${column} = $${values.length}`);
  }
  if (changes.launched) assignments.push('launched_at = now()');
  const accepted = [...expectedTaskStates];
  if (changes.taskState !== undefined) accepted.push(changes.taskState);
  values.push(accepted.filter((state) => state !== null));
  const acceptsNull = accepted.includes(null);
  // Column names come from COLUMN_OF, every value is a parameter.
  const text = `UPDATE instances SET ${assignments.join(', ')}
       WHERE uuid = $1 AND task_request_id = $2
         AND (task_state = ANY($${values.length})${acceptsNull ? ' OR task_state IS NULL' : ''})`;
  return { text, values };
}

/** Writes the save (saveStatement) in the caller's transaction, or fails with UnexpectedTaskState. */
export async function saveChanges(client: PoolClient, request: SaveRequest): Promise<Instance> {
  const { instanceUuid, expectedTaskStates, changes } = request;
  const { text, values } = saveStatement(request);
  const { rowCount } = await client.query(text, values);
  if (rowCount === 0) {
    const current = await getInstance(client, instanceUuid);
    throw ApplicationFailure.create({
      type: 'UnexpectedTaskState',
      message:
        `Instance ${instanceUuid} is in task_state ${current.taskState ?? 'None'}, ` +
        `expected ${expectedTaskStates.map((state) => state ?? 'None').join(' or ')} for this request`,
      nonRetryable: true,
    });
  }
  await writeSystemMetadata(client, instanceUuid, request.setSystemMetadata, request.removeSystemMetadata);
  if (changes.host) {
    // The ports follow the instance to its new host; an offload (host null) keeps them bound.
    await client.query('UPDATE ports SET binding_host = $2 WHERE instance_uuid = $1', [instanceUuid, changes.host]);
  }
  return getInstance(client, instanceUuid);
}

/** saveChanges, in a transaction of its own. */
export async function saveInstance(pool: Pool, request: SaveRequest): Promise<Instance> {
  return inTransaction(pool, (client) => saveChanges(client, request));
}

/**
 * After a failed action: task_state := null (and power_state := `powerState`, when the action
 * changed it back), if this request still holds the instance.
 */
export async function releaseInstance(
  pool: Pool,
  { instanceUuid, requestId, powerState }: { instanceUuid: string; requestId: string; powerState?: PowerState },
): Promise<void> {
  await pool.query(
    `UPDATE instances SET task_state = NULL, power_state = COALESCE($3, power_state), updated_at = now()
      WHERE uuid = $1 AND task_request_id = $2`,
    [instanceUuid, requestId, powerState ?? null],
  );
}

/**
 * The last step of a delete: the instance becomes vm_state deleted, on no host, and no lookup
 * of live instances finds it again. A retry of a delete that committed finds it done.
 */
export async function markInstanceDeleted(
  pool: Pool,
  { instanceUuid, requestId, localDelete = false }: { instanceUuid: string; requestId: string; localDelete?: boolean },
): Promise<void> {
  const { rowCount } = await pool.query(
    `UPDATE instances SET vm_state = $3, task_state = NULL, power_state = $4, host = NULL, node = NULL,
            deleted_at = COALESCE(deleted_at, now()), updated_at = now()
      WHERE uuid = $1 AND task_request_id = $2 AND (task_state = $5 OR deleted_at IS NOT NULL)`,
    [instanceUuid, requestId, VmState.DELETED, PowerState.NOSTATE, TaskState.DELETING],
  );
  if (rowCount === 0) {
    throw ApplicationFailure.create({
      type: 'UnexpectedTaskState',
      message: `Instance ${instanceUuid} is no longer held by the delete ${requestId}`,
      nonRetryable: true,
    });
  }
  // Its addresses go back to the pool, as Neutron deletes a deleted server's ports; after a local
  // delete the guest may still run on the down host with them, so they stay held until that
  // host's worker starts and removes it (releaseDeletedInstancePorts).
  if (!localDelete) await pool.query('UPDATE ports SET deleted = true WHERE instance_uuid = $1', [instanceUuid]);
}
