// The reconciler's reads and writes: claims no workflow will release, power states libvirt
// contradicts, and which shelve snapshots an instance still needs. Every write is a
// compare-and-swap on what was found, so a reconcile never undoes an action that began since.
import type { Pool } from 'pg';
import { PowerState, SHELVE_TASK_STATES, type TaskState, type VmState } from '../nova.js';

/** Which instances a reconcile looks at: claims and images older than the grace period, maybe only some instances. */
export interface ReconcileScope {
  /** Seconds a claim or an image must have stood unchanged: the API claims just before it starts the workflow. */
  graceSeconds: number;
  /** Only these instances (a test's own), or null for all. */
  instanceUuids: string[] | null;
}

/** A claim as the reconciler found it: held by `requestId` for the workflow `workflowId`. */
export interface StrandedClaim {
  instanceUuid: string;
  requestId: string;
  workflowId: string;
  taskState: TaskState;
  vmState: VmState;
  host: string | null;
}

export interface ClaimRelease {
  claim: StrandedClaim;
  /** What the instance becomes besides free; absent fields stay as they are. */
  vmState?: VmState;
  powerState?: PowerState;
  /** Its host holds nothing of it any more: host, node and availability zone cleared. */
  offHost?: boolean;
}

/** A power_state the sync changed: what the database said, and what the domain shows. */
export interface PowerStateChange {
  instanceUuid: string;
  from: PowerState;
  to: PowerState;
}

/** Claims named after a workflow, unchanged for the grace period: candidates, not yet verdicts. */
export async function listClaims(
  pool: Pool,
  { graceSeconds, instanceUuids }: ReconcileScope,
): Promise<StrandedClaim[]> {
  const { rows } = await pool.query(
    `SELECT uuid, task_request_id, task_workflow_id, task_state, vm_state, host FROM instances
      WHERE task_state IS NOT NULL AND task_workflow_id IS NOT NULL AND deleted_at IS NULL
        AND updated_at < now() - make_interval(secs => $1)
        AND ($2::uuid[] IS NULL OR uuid = ANY($2))
      ORDER BY updated_at`,
    [graceSeconds, instanceUuids],
  );
  return rows.map((row) => ({
    instanceUuid: row.uuid,
    requestId: row.task_request_id,
    workflowId: row.task_workflow_id,
    taskState: row.task_state,
    vmState: row.vm_state,
    host: row.host,
  }));
}

/**
 * Frees the instance, only while the claim is still the one found (same request, same
 * workflow, same task); true when it did.
 */
export async function releaseClaim(
  pool: Pool,
  { claim, vmState, powerState, offHost = false }: ClaimRelease,
): Promise<boolean> {
  const { rowCount } = await pool.query(
    `UPDATE instances SET task_state = NULL, vm_state = coalesce($5, vm_state),
            power_state = coalesce($6, power_state), host = CASE WHEN $7 THEN NULL ELSE host END,
            node = CASE WHEN $7 THEN NULL ELSE node END,
            availability_zone = CASE WHEN $7 THEN NULL ELSE availability_zone END, updated_at = now()
      WHERE uuid = $1 AND task_request_id = $2 AND task_workflow_id = $3 AND task_state = $4`,
    [claim.instanceUuid, claim.requestId, claim.workflowId, claim.taskState, vmState, powerState, offHost],
  );
  return rowCount === 1;
}

/**
 * Nova's _sync_power_states for one host: each settled instance on it takes the power_state
 * its domain shows (NOSTATE when it has none), if nothing changed it since. Returns the changes made.
 */
export async function syncPowerStates(
  pool: Pool,
  host: string,
  powerStates: Record<string, PowerState>,
  instanceUuids: string[] | null,
): Promise<PowerStateChange[]> {
  const { rows } = await pool.query<{ uuid: string; power_state: PowerState }>(
    `SELECT uuid, power_state FROM instances
      WHERE host = $1 AND task_state IS NULL AND deleted_at IS NULL AND ($2::uuid[] IS NULL OR uuid = ANY($2))`,
    [host, instanceUuids],
  );
  const changes: PowerStateChange[] = [];
  for (const { uuid, power_state: recorded } of rows) {
    const actual = powerStates[uuid] ?? PowerState.NOSTATE;
    if (actual === recorded) continue;
    const { rowCount } = await pool.query(
      `UPDATE instances SET power_state = $2, updated_at = now()
        WHERE uuid = $1 AND host = $3 AND task_state IS NULL AND power_state = $4`,
      [uuid, actual, host, recorded],
    );
    if (rowCount === 1) changes.push({ instanceUuid: uuid, from: recorded, to: actual });
  }
  return changes;
}

/**
 * Of these shelve snapshots, the ones something still needs: a live instance's shelved_image_id,
 * or a shelve of their instance still under way (it may be uploading into one, or be about to
 * record it).
 */
export async function snapshotsInUse(
  pool: Pool,
  snapshots: { imageId: string; instanceUuid: string }[],
): Promise<Set<string>> {
  const { rows } = await pool.query<{ image_id: string }>(
    `SELECT m.value AS image_id FROM instance_system_metadata m JOIN instances i ON i.uuid = m.instance_uuid
      WHERE m.key = 'shelved_image_id' AND m.value = ANY($1) AND i.deleted_at IS NULL
     UNION
     SELECT c.image_id FROM unnest($1::text[], $2::uuid[]) AS c(image_id, instance_uuid)
       JOIN instances i ON i.uuid = c.instance_uuid
      WHERE i.task_state = ANY($3) AND i.deleted_at IS NULL`,
    [snapshots.map((image) => image.imageId), snapshots.map((image) => image.instanceUuid), SHELVE_TASK_STATES],
  );
  return new Set(rows.map((row) => row.image_id));
}
