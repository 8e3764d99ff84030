// The reconciler's reads and writes on PostgreSQL and Glance: claims no workflow will release,
// power states libvirt contradicts, snapshot images a dead action left that nothing needs. Every write is
// a compare-and-swap on what was found, so a reconcile never undoes an action that began since.
import { log } from '@temporalio/activity';
import type { Pool } from 'pg';
import type { GlanceClient, GlanceImage } from '../lib/glance.js';
import { isUuid, PowerState, TaskState, type VmState } from '../lib/nova.js';
import { sqlErrorsClassified } from '../lib/sql-errors.js';

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

/** The snapshot image of a shelve, in a state no unshelve can use. */
export interface OrphanedSnapshot {
  imageId: string;
  instanceUuid: string;
  status: GlanceImage['status'];
}

/** How long a compute host may stay silent before it counts as down, as for the scheduler. */
const SERVICE_DOWN_SECONDS = 60;
/**
 * Every status a shelve snapshot can be left in: half-made (queued, saving, killed), or whole
 * (active) by a shelve that ended between its upload and its SHELVED save.
 */
const SNAPSHOT_STATUSES: GlanceImage['status'][] = ['queued', 'saving', 'killed', 'active'];
const SHELVE_TASKS = [TaskState.SHELVING, TaskState.SHELVING_IMAGE_PENDING_UPLOAD, TaskState.SHELVING_IMAGE_UPLOADING];

export function createReconcilerActivities(pool: Pool, glance: GlanceClient) {
  return sqlErrorsClassified({
    /** Claims named after a workflow, unchanged for the grace period: candidates, not yet verdicts. */
    async listClaims({ graceSeconds, instanceUuids }: ReconcileScope): Promise<StrandedClaim[]> {
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
    },

    /**
     * Frees the instance, only while the claim is still the one found (same request, same
     * workflow, same task); true when it did.
     */
    async releaseClaim({ claim, vmState, powerState, offHost = false }: ClaimRelease): Promise<boolean> {
      const { rowCount } = await pool.query(
        `UPDATE instances SET task_state = NULL, vm_state = coalesce($5, vm_state),
                power_state = coalesce($6, power_state), host = CASE WHEN $7 THEN NULL ELSE host END,
                node = CASE WHEN $7 THEN NULL ELSE node END,
                availability_zone = CASE WHEN $7 THEN NULL ELSE availability_zone END, updated_at = now()
          WHERE uuid = $1 AND task_request_id = $2 AND task_workflow_id = $3 AND task_state = $4`,
        [claim.instanceUuid, claim.requestId, claim.workflowId, claim.taskState, vmState, powerState, offHost],
      );
      log.info(rowCount === 1 ? 'claim released' : 'claim changed meanwhile: left alone', {
        instanceUuid: claim.instanceUuid,
        workflowId: claim.workflowId,
      });
      return rowCount === 1;
    },

    /** Compute hosts that reported within the service-down window: the others cannot answer. */
    async listUpHosts(): Promise<string[]> {
      const { rows } = await pool.query<{ host: string }>(
        'SELECT host FROM compute_nodes WHERE updated_at > now() - make_interval(secs => $1) ORDER BY host',
        [SERVICE_DOWN_SECONDS],
      );
      return rows.map((row) => row.host);
    },

    /**
     * Nova's _sync_power_states for one host: each settled instance on it takes the power_state
     * its domain shows (NOSTATE when it has none), if nothing changed it since. Returns how many did.
     */
    async syncPowerStates({
      host,
      powerStates,
      instanceUuids,
    }: {
      host: string;
      powerStates: Record<string, PowerState>;
      instanceUuids: string[] | null;
    }): Promise<number> {
      const { rows } = await pool.query<{ uuid: string; power_state: PowerState }>(
        `SELECT uuid, power_state FROM instances
          WHERE host = $1 AND task_state IS NULL AND deleted_at IS NULL AND ($2::uuid[] IS NULL OR uuid = ANY($2))`,
        [host, instanceUuids],
      );
      let synced = 0;
      for (const { uuid, power_state: recorded } of rows) {
        const actual = powerStates[uuid] ?? PowerState.NOSTATE;
        if (actual === recorded) continue;
        const { rowCount } = await pool.query(
          `UPDATE instances SET power_state = $2, updated_at = now()
            WHERE uuid = $1 AND host = $3 AND task_state IS NULL AND power_state = $4`,
          [uuid, actual, host, recorded],
        );
        if (rowCount === 1) {
          log.info('power state synced from libvirt', { instanceUuid: uuid, host, from: recorded, to: actual });
          synced += 1;
        }
      }
      return synced;
    },

    /**
     * Shelve snapshots older than the grace period that nothing needs: no live instance's
     * shelved_image_id, and no shelve of their instance still under way (it may be uploading into
     * one, or be about to record it).
     */
    async listOrphanedSnapshots({ graceSeconds, instanceUuids }: ReconcileScope): Promise<OrphanedSnapshot[]> {
      const owner = glance.snapshotContext.projectId;
      const cutoff = Date.now() - graceSeconds * 1000;
      const candidates = [];
      for (const status of SNAPSHOT_STATUSES) {
        for (const image of await glance.listImages(glance.snapshotContext, { owner, status })) {
          const instanceUuid = image.instance_uuid;
          const ours =
            image.owner === owner &&
            image.image_type === 'snapshot' &&
            typeof instanceUuid === 'string' &&
            isUuid(instanceUuid);
          if (!ours || (instanceUuids && !instanceUuids.includes(instanceUuid))) continue;
          if (Date.parse(String(image.created_at)) > cutoff) continue;
          candidates.push({ imageId: image.id, instanceUuid, status: image.status });
        }
      }
      const { rows } = await pool.query<{ image_id: string }>(
        `SELECT m.value AS image_id FROM instance_system_metadata m JOIN instances i ON i.uuid = m.instance_uuid
          WHERE m.key = 'shelved_image_id' AND m.value = ANY($1) AND i.deleted_at IS NULL
         UNION
         SELECT c.image_id FROM unnest($1::text[], $2::uuid[]) AS c(image_id, instance_uuid)
           JOIN instances i ON i.uuid = c.instance_uuid
          WHERE i.task_state = ANY($3) AND i.deleted_at IS NULL`,
        [candidates.map((image) => image.imageId), candidates.map((image) => image.instanceUuid), SHELVE_TASKS],
      );
      const needed = new Set(rows.map((row) => row.image_id));
      return candidates.filter((image) => !needed.has(image.imageId));
    },
  });
}

export type ReconcilerActivities = ReturnType<typeof createReconcilerActivities>;
