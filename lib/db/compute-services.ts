// The compute hosts as Nova's nova-compute services: each worker's report that its host is alive
// with its capacity, an admin's changes (os-services), and the one rule for whether a host is up.
import type { Pool, QueryResultRow } from 'pg';
import { isUuid } from '../nova.js';
import type { HostCapacity } from '../scheduler.js';

/** How long a compute host may stay silent before it counts as down (Nova's service_down_time). */
export const SERVICE_DOWN_SECONDS = 60;

/**
 * Whether the compute node `c` is up, as Nova's servicegroup says: not forced down by an admin,
 * and reported within SERVICE_DOWN_SECONDS. Every query that asks reads compute_nodes as `c`.
 */
export const SERVICE_UP = `(NOT c.forced_down AND c.updated_at > now() - make_interval(secs => ${SERVICE_DOWN_SECONDS}))`;

export interface ComputeNodeReport extends HostCapacity {
  host: string;
  availabilityZone: string;
  hypervisorType: string;
}

/** A compute worker's report that its host is alive, with its capacity. */
export async function reportComputeNode(pool: Pool, node: ComputeNodeReport): Promise<void> {
  await pool.query(
    `INSERT INTO compute_nodes (host, availability_zone, hypervisor_type, vcpus, memory_mb, local_gb,
       cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
     ON CONFLICT (host) DO UPDATE SET availability_zone = EXCLUDED.availability_zone,
       hypervisor_type = EXCLUDED.hypervisor_type, vcpus = EXCLUDED.vcpus, memory_mb = EXCLUDED.memory_mb,
       local_gb = EXCLUDED.local_gb, cpu_allocation_ratio = EXCLUDED.cpu_allocation_ratio,
       ram_allocation_ratio = EXCLUDED.ram_allocation_ratio, disk_allocation_ratio = EXCLUDED.disk_allocation_ratio,
       updated_at = now()`,
    [
      node.host,
      node.availabilityZone,
      node.hypervisorType,
      node.vcpus,
      node.memoryMb,
      node.localGb,
      node.cpuAllocationRatio,
      node.ramAllocationRatio,
      node.diskAllocationRatio,
    ],
  );
}

/** A compute host as Nova's os-services shows its nova-compute service. */
export interface ComputeService {
  serviceId: string;
  host: string;
  availabilityZone: string;
  disabled: boolean;
  disabledReason: string | null;
  forcedDown: boolean;
  up: boolean;
  updatedAt: string;
}

function serviceFromRow(row: QueryResultRow): ComputeService {
  return {
    serviceId: row.service_id,
    host: row.host,
    availabilityZone: row.availability_zone,
    disabled: row.disabled,
    disabledReason: row.disabled_reason,
    forcedDown: row.forced_down,
    up: row.up,
    updatedAt: (row.updated_at as Date).toISOString(),
  };
}

const SERVICE_COLUMNS = `service_id, host, availability_zone, disabled, disabled_reason, forced_down, updated_at,
  ${SERVICE_UP} AS up`;

/** The compute services, by host name; only `host`'s when it is given. */
export async function listComputeServices(pool: Pool, host?: string): Promise<ComputeService[]> {
  const { rows } = await pool.query(
    // eslint-disable-next-line no-restricted-syntax -- a constant column list, values as parameters
    `SELECT ${SERVICE_COLUMNS} FROM compute_nodes c WHERE $1::text IS NULL OR host = $1 ORDER BY host`,
    [host ?? null],
  );
  return rows.map(serviceFromRow);
}

/** The compute hosts that are up (SERVICE_UP), by name: the others cannot answer. */
export async function listUpComputeHosts(pool: Pool): Promise<string[]> {
  const { rows } = await pool.query<{ host: string }>(
    // eslint-disable-next-line no-restricted-syntax -- a constant expression, no values
    `SELECT host FROM compute_nodes c WHERE ${SERVICE_UP} ORDER BY host`,
  );
  return rows.map((row) => row.host);
}

export interface ComputeServiceChanges {
  disabled?: boolean;
  /** Kept only while the service is disabled. */
  disabledReason?: string | null;
  forcedDown?: boolean;
}

/** An admin's change to a compute service (os-services); null when there is no such service. */
export async function updateComputeService(
  pool: Pool,
  serviceId: string,
  changes: ComputeServiceChanges,
): Promise<ComputeService | null> {
  if (!isUuid(serviceId)) return null;
  const { rows } = await pool.query(
    // eslint-disable-next-line no-restricted-syntax -- a constant column list, values as parameters
    `UPDATE compute_nodes c SET disabled = coalesce($2, disabled),
       disabled_reason = CASE WHEN coalesce($2, disabled) THEN coalesce($3, CASE WHEN $2 THEN NULL ELSE disabled_reason END) END,
       forced_down = coalesce($4, forced_down)
     WHERE service_id = $1 RETURNING ${SERVICE_COLUMNS}`,
    [serviceId, changes.disabled ?? null, changes.disabledReason ?? null, changes.forcedDown ?? null],
  );
  return rows[0] ? serviceFromRow(rows[0]) : null;
}

/**
 * Why a compute host counts as down, or null while it is up: forced down by an admin, silent for
 * longer than the service-down window, or unknown (Nova's servicegroup, and its local delete when
 * the host's service is not found).
 */
export async function computeHostDownReason(pool: Pool, host: string): Promise<string | null> {
  const [service] = await listComputeServices(pool, host);
  if (!service) return `host ${host} is not a known compute host`;
  if (service.forcedDown) return `host ${host} is forced down`;
  if (!service.up) return `host ${host} has not reported since ${service.updatedAt}`;
  return null;
}
