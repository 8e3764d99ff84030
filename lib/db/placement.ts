// Where an instance goes: the compute hosts with what their instances take, and the placement
// that picks one (lib/scheduler.ts) and records it on the instance under one lock.
import type { Pool } from 'pg';
import type { Instance, TaskState } from '../nova.js';
import { type HostState, type RequestSpec, selectHost } from '../scheduler.js';
import { SERVICE_UP } from './compute-services.js';
import { type InstanceChanges, saveChanges } from './task-states.js';
import { inTransaction, type Queryable } from './transactions.js';

export interface DestinationRequest extends RequestSpec {
  /** The instance being placed: its own usage does not count against the hosts. */
  instanceUuid: string;
}

/** A placement, recorded on the instance with `changes` while `requestId` holds it. */
export interface PlacementRequest extends DestinationRequest {
  requestId: string;
  expectedTaskStates: (TaskState | null)[];
  changes: Omit<InstanceChanges, 'host' | 'node' | 'availabilityZone'>;
}

export interface Destination {
  host: string;
  node: string;
  availabilityZone: string;
}

/** The advisory lock key that serializes placements (any constant no other code uses). */
const PLACEMENT_LOCK = 0x766d7368;

function destinationOf(host: HostState): Destination {
  return { host: host.host, node: host.host, availabilityZone: host.availabilityZone };
}

/**
 * Every compute host with what the instances placed on it take: all but the offloaded ones, and
 * an offloaded one too while it is spawned there (its unshelve placed it; Nova bug 2025480). The
 * instance being placed does not count against any host.
 */
async function hostStates(db: Queryable, instanceUuid: string): Promise<HostState[]> {
  const { rows } = await db.query(
    // eslint-disable-next-line no-restricted-syntax -- a constant expression, values as parameters
    `SELECT c.*, ${SERVICE_UP} AS up,
       coalesce(sum(i.vcpus), 0)::int AS vcpus_used,
       coalesce(sum(i.memory_mb), 0)::int AS memory_mb_used,
       coalesce(sum(i.root_gb + i.ephemeral_gb + i.swap / 1024.0), 0)::float AS local_gb_used
     FROM compute_nodes c
     LEFT JOIN instances i ON i.host = c.host AND i.deleted_at IS NULL AND i.uuid <> $1
       AND (i.vm_state <> 'shelved_offloaded' OR i.task_state IS NOT NULL)
     GROUP BY c.host`,
    [instanceUuid],
  );
  return rows.map((row) => ({
    host: row.host,
    availabilityZone: row.availability_zone,
    up: row.up,
    disabled: row.disabled,
    disabledReason: row.disabled_reason,
    vcpus: row.vcpus,
    memoryMb: row.memory_mb,
    localGb: row.local_gb,
    cpuAllocationRatio: row.cpu_allocation_ratio,
    ramAllocationRatio: row.ram_allocation_ratio,
    diskAllocationRatio: row.disk_allocation_ratio,
    vcpusUsed: row.vcpus_used,
    memoryMbUsed: row.memory_mb_used,
    localGbUsed: row.local_gb_used,
  }));
}

/**
 * The host the scheduler would pick, for the API's early answer to an unshelve onto a host or
 * zone; nothing is reserved: placeInstance does that.
 */
export async function selectDestination(pool: Pool, request: DestinationRequest): Promise<Destination> {
  return destinationOf(selectHost(await hostStates(pool, request.instanceUuid), request));
}

/**
 * Picks the instance's host and records it on the instance in one transaction, under a lock
 * that every placement takes: two requests never both count the same free capacity, and from
 * this commit the instance counts against its host (placed, it is no longer offloaded's zero).
 */
export async function placeInstance(
  pool: Pool,
  request: PlacementRequest,
): Promise<{ destination: Destination; instance: Instance }> {
  return inTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [PLACEMENT_LOCK]);
    const destination = destinationOf(selectHost(await hostStates(client, request.instanceUuid), request));
    const instance = await saveChanges(client, {
      instanceUuid: request.instanceUuid,
      requestId: request.requestId,
      expectedTaskStates: request.expectedTaskStates,
      changes: {
        ...request.changes,
        host: destination.host,
        node: destination.node,
        availabilityZone: destination.availabilityZone,
      },
    });
    return { destination, instance };
  });
}
