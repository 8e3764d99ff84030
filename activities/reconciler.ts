// The reconciler's activities on PostgreSQL (lib/db/reconciler.ts) and Glance: claims no workflow
// will release, power states libvirt contradicts, snapshot images a dead action left that nothing
// needs. Every write is a compare-and-swap on what was found (lib/db/reconciler.ts).
import { log } from '@temporalio/activity';
import type { Pool } from 'pg';
import { listUpComputeHosts } from '../lib/db/compute-services.js';
import { getInstance } from '../lib/db/instances.js';
import {
  type ClaimRelease,
  listClaims,
  type ReconcileScope,
  releaseClaim,
  snapshotsInUse,
  syncPowerStates,
} from '../lib/db/reconciler.js';
import type { GlanceClient, GlanceImage } from '../lib/glance.js';
import { isUuid, type PowerState } from '../lib/nova.js';
import { sqlErrorsClassified } from '../lib/sql-errors.js';

/** The snapshot image of a shelve, in a state no unshelve can use. */
export interface OrphanedSnapshot {
  imageId: string;
  instanceUuid: string;
  status: GlanceImage['status'];
}

/**
 * Every status a shelve snapshot can be left in: half-made (queued, saving, killed), or whole
 * (active) by a shelve that ended between its upload and its SHELVED save.
 */
const SNAPSHOT_STATUSES: GlanceImage['status'][] = ['queued', 'saving', 'killed', 'active'];

export function createReconcilerActivities(pool: Pool, glance: GlanceClient) {
  return sqlErrorsClassified({
    /** Claims named after a workflow, unchanged for the grace period: candidates, not yet verdicts. */
    async listClaims(scope: ReconcileScope) {
      return listClaims(pool, scope);
    },

    /**
     * Frees the instance, only while the claim is still the one found (same request, same
     * workflow, same task); true when it did.
     */
    async releaseClaim(release: ClaimRelease) {
      const released = await releaseClaim(pool, release);
      log.info(released ? 'claim released' : 'claim changed meanwhile: left alone', {
        instanceUuid: release.claim.instanceUuid,
        workflowId: release.claim.workflowId,
      });
      return released;
    },

    /** The instance of a stranded claim, as the database has it: what finishing its offload checks. */
    async getInstance({ instanceUuid }: { instanceUuid: string }) {
      return getInstance(pool, instanceUuid);
    },

    /** Compute hosts that are up (lib/db/compute-services.ts): the others cannot answer. */
    async listUpHosts() {
      return listUpComputeHosts(pool);
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
      const changes = await syncPowerStates(pool, host, powerStates, instanceUuids);
      for (const { instanceUuid, from, to } of changes) {
        log.info('power state synced from libvirt', { instanceUuid, host, from, to });
      }
      return changes.length;
    },

    /**
     * Shelve snapshots older than the grace period that nothing needs: no live instance's
     * shelved_image_id, and no shelve of their instance still under way (snapshotsInUse).
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
      const needed = await snapshotsInUse(pool, candidates);
      return candidates.filter((image) => !needed.has(image.imageId));
    },
  });
}

export type ReconcilerActivities = ReturnType<typeof createReconcilerActivities>;
