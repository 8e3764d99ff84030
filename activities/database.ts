// Activities on PostgreSQL, the record users and the API read. Every write to an instance that
// an action makes is a compare-and-swap on task_state (Nova's expected_task_state), so two
// actions on one instance can never interleave.
import { randomBytes } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient, QueryResultRow } from 'pg';
import {
  ALLOWED_VM_STATES,
  CLAIM_TASK_STATE,
  isUuid,
  macAddress,
  type BlockDeviceMapping,
  type Flavor,
  type Instance,
  type InstanceAction,
  type Port,
  PowerState,
  TaskState,
  VmState,
} from '../lib/nova.js';
import { actionsStarted } from '../lib/metrics.js';
import { type HostCapacity, type HostState, type RequestSpec, selectHost } from '../lib/scheduler.js';
import { sqlErrorsClassified } from '../lib/sql-errors.js';

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
   * The workflow the claim is for, named by a caller outside Temporal (the API, just before it
   * starts that workflow). Inside an activity the workflow that runs it is the claimant, whatever
   * this says (claimingWorkflowId).
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

export interface CreateInstanceRequest {
  uuid: string;
  displayName: string;
  projectId: string;
  userId: string;
  imageRef: string;
  flavor: Flavor;
  /** The availability zone the instance is pinned to, if any. */
  availabilityZone: string | null;
  requestId: string;
  /** system_metadata at build, e.g. the image's properties as image_* keys. */
  systemMetadata: Record<string, string>;
  blockDeviceMappings: BlockDeviceMapping[];
  ports: Omit<Port, 'bindingHost'>[];
  /** The build workflow the new instance is held for, as ClaimRequest.workflowId. */
  workflowId?: string;
}

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

/** How long a compute host may stay silent before the scheduler counts it as down. */
const SERVICE_DOWN_SECONDS = 60;

function instanceFromRow(
  row: QueryResultRow,
  systemMetadata: Record<string, string>,
  blockDeviceMappings: BlockDeviceMapping[],
  ports: Port[],
): Instance {
  return {
    uuid: row.uuid,
    displayName: row.display_name,
    projectId: row.project_id,
    userId: row.user_id,
    host: row.host,
    node: row.node,
    availabilityZone: row.availability_zone,
    requestedAvailabilityZone: row.requested_availability_zone,
    vmState: row.vm_state,
    taskState: row.task_state,
    powerState: row.power_state,
    imageRef: row.image_ref,
    flavor: {
      flavorid: row.flavorid,
      name: row.flavor_name,
      vcpus: row.vcpus,
      memoryMb: row.memory_mb,
      rootGb: row.root_gb,
      ephemeralGb: row.ephemeral_gb,
      swap: row.swap,
    },
    launchedAt: row.launched_at ? (row.launched_at as Date).toISOString() : null,
    createdAt: (row.created_at as Date).toISOString(),
    updatedAt: (row.updated_at as Date).toISOString(),
    systemMetadata,
    blockDeviceMappings,
    ports,
  };
}

/**
 * Rows of `table` for these instances, grouped by instance, in the order `orderBy` gives. The
 * table and the order are names of this module's own choosing, never input; the values are parameters.
 */
async function rowsByInstance(
  db: Pool | PoolClient,
  table: 'ports' | 'block_device_mappings' | 'instance_system_metadata',
  orderBy: string,
  instanceUuids: string[],
): Promise<Map<string, QueryResultRow[]>> {
  const { rows } = await db.query(
    // eslint-disable-next-line no-restricted-syntax -- names of this module's choosing, values as parameters
    `SELECT * FROM ${table} WHERE instance_uuid = ANY($1::uuid[]) ORDER BY instance_uuid, ${orderBy}`,
    [instanceUuids],
  );
  const grouped = new Map<string, QueryResultRow[]>();
  for (const row of rows) grouped.set(row.instance_uuid, [...(grouped.get(row.instance_uuid) ?? []), row]);
  return grouped;
}

/** Whole instances from their rows: three more queries, however many instances. */
async function instancesFromRows(db: Pool | PoolClient, rows: QueryResultRow[]): Promise<Instance[]> {
  const uuids = rows.map((row) => row.uuid as string);
  const metadata = await rowsByInstance(db, 'instance_system_metadata', 'key', uuids);
  const mappings = await rowsByInstance(db, 'block_device_mappings', 'boot_index NULLS LAST, device_name', uuids);
  const ports = await rowsByInstance(db, 'ports', 'created_at, id', uuids);
  return rows.map((row) =>
    instanceFromRow(
      row,
      Object.fromEntries((metadata.get(row.uuid) ?? []).map((entry) => [entry.key, entry.value])),
      (mappings.get(row.uuid) ?? []).map((mapping) => ({
        bootIndex: mapping.boot_index,
        sourceType: mapping.source_type,
        destinationType: mapping.destination_type,
        imageId: mapping.image_id,
        volumeId: mapping.volume_id,
        volumeSizeGb: mapping.volume_size_gb,
        deviceName: mapping.device_name,
      })),
      (ports.get(row.uuid) ?? []).map((port) => ({
        id: port.id,
        network: port.network,
        macAddress: port.mac_address,
        bindingHost: port.binding_host,
      })),
    ),
  );
}

function instanceNotFound(instanceUuid: string): ApplicationFailure {
  return ApplicationFailure.create({
    type: 'InstanceNotFound',
    message: `Instance ${instanceUuid} could not be found.`,
    nonRetryable: true,
  });
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

export async function getInstance(db: Pool | PoolClient, instanceUuid: string): Promise<Instance> {
  if (!isUuid(instanceUuid)) throw instanceNotFound(instanceUuid);
  const { rows } = await db.query('SELECT * FROM instances WHERE uuid = $1 AND deleted_at IS NULL', [instanceUuid]);
  if (rows.length === 0) throw instanceNotFound(instanceUuid);
  return (await instancesFromRows(db, rows))[0]!;
}

/** The instances of a project, or of all projects when `projectId` is null, newest first. */
export async function listInstances(db: Pool | PoolClient, projectId: string | null): Promise<Instance[]> {
  const { rows } = await db.query(
    `SELECT * FROM instances WHERE ($1::text IS NULL OR project_id = $1) AND deleted_at IS NULL
      ORDER BY created_at DESC, uuid`,
    [projectId],
  );
  return instancesFromRows(db, rows);
}

async function inTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

async function writeSystemMetadata(
  client: PoolClient,
  instanceUuid: string,
  set: Record<string, string> = {},
  remove: readonly string[] = [],
): Promise<void> {
  for (const [key, value] of Object.entries(set)) {
    await client.query(
      `INSERT INTO instance_system_metadata (instance_uuid, key, value) VALUES ($1, $2, $3)
       ON CONFLICT (instance_uuid, key) DO UPDATE SET value = EXCLUDED.value`,
      [instanceUuid, key, value],
    );
  }
  if (remove.length > 0) {
    await client.query('DELETE FROM instance_system_metadata WHERE instance_uuid = $1 AND key = ANY($2)', [
      instanceUuid,
      remove,
    ]);
  }
}

/**
 * The workflow a claim is made for. Inside an activity it is the workflow that scheduled it, as
 * Temporal records it: no input can name another. Outside one, the workflow the caller names (the
 * API's claim, made before it starts that workflow), or none.
 */
function claimingWorkflowId(named: string | undefined): string | null {
  let context: Context;
  try {
    context = Context.current();
  } catch {
    return named ?? null; // Not in an activity.
  }
  return context.info.workflowExecution?.workflowId ?? null;
}

/** Starts the action's row in the actions log, naming its workflow; a retry finds it there. */
async function recordAction(
  client: PoolClient,
  action: {
    instanceUuid: string;
    action: string;
    requestId: string;
    userId?: string;
    projectId?: string;
    workflowId: string | null;
  },
): Promise<void> {
  await client.query(
    `INSERT INTO instance_actions (instance_uuid, action, request_id, user_id, project_id, workflow_id)
     SELECT uuid, $2, $3, coalesce($4, user_id), coalesce($5, project_id), $6 FROM instances WHERE uuid = $1
     ON CONFLICT (request_id) DO NOTHING`,
    [
      action.instanceUuid,
      action.action,
      action.requestId,
      action.userId ?? null,
      action.projectId ?? null,
      action.workflowId,
    ],
  );
}

/** How many MAC addresses a port tries before the build gives up: a collision is rare (24 bits). */
const MAC_DRAWS = 8;

/**
 * Records a port with its MAC address, or another one drawn at random when a live port holds it
 * already: retrying the same address would fail the same way for ever. A retry finds its port.
 */
async function insertPort(client: PoolClient, instanceUuid: string, port: Omit<Port, 'bindingHost'>): Promise<void> {
  let mac = port.macAddress;
  for (let draw = 1; ; draw++) {
    // No conflict target: a port already recorded (its id) and a MAC a live port holds both do nothing.
    await client.query(
      `INSERT INTO ports (id, instance_uuid, network, mac_address) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
      [port.id, instanceUuid, port.network, mac],
    );
    const { rowCount } = await client.query('SELECT 1 FROM ports WHERE id = $1 AND instance_uuid = $2', [
      port.id,
      instanceUuid,
    ]);
    if (rowCount === 1) return;
    if (draw === MAC_DRAWS) {
      throw ApplicationFailure.create({
        type: 'MacAddressGenerationFailure',
        message: `No free MAC address found for port ${port.id} after ${MAC_DRAWS} draws.`,
        nonRetryable: true,
      });
    }
    mac = macAddress(randomBytes(3).toString('hex'));
  }
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
 * Writes `changes` if the instance is still held by `requestId` in one of the expected
 * task_states, or already shows the new task_state (a retry of a save that committed).
 */
async function saveChanges(client: PoolClient, request: SaveRequest): Promise<Instance> {
  const { instanceUuid, requestId, expectedTaskStates, changes } = request;
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
  const { rowCount } = await client.query(
    // eslint-disable-next-line no-restricted-syntax -- column names from COLUMN_OF, values as parameters
    `UPDATE instances SET ${assignments.join(', ')}
       WHERE uuid = $1 AND task_request_id = $2
         AND (task_state = ANY($${values.length})${acceptsNull ? ' OR task_state IS NULL' : ''})`,
    values,
  );
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
async function hostStates(db: Pool | PoolClient, instanceUuid: string): Promise<HostState[]> {
  const { rows } = await db.query(
    `SELECT c.*, NOT c.forced_down AND c.updated_at > now() - make_interval(secs => $1) AS up,
       coalesce(sum(i.vcpus), 0)::int AS vcpus_used,
       coalesce(sum(i.memory_mb), 0)::int AS memory_mb_used,
       coalesce(sum(i.root_gb + i.ephemeral_gb + i.swap / 1024.0), 0)::float AS local_gb_used
     FROM compute_nodes c
     LEFT JOIN instances i ON i.host = c.host AND i.deleted_at IS NULL AND i.uuid <> $2
       AND (i.vm_state <> 'shelved_offloaded' OR i.task_state IS NOT NULL)
     GROUP BY c.host`,
    [SERVICE_DOWN_SECONDS, instanceUuid],
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

export function createDatabaseActivities(pool: Pool) {
  return sqlErrorsClassified({
    /** Why the host counts as down at this moment, or null while it is up (computeHostDownReason). */
    async computeHostDown({ host }: { host: string }): Promise<string | null> {
      return computeHostDownReason(pool, host);
    },

    /**
     * Claims the instance for an action: task_state := the action's task, only if the vm_state
     * allows the action and no other task runs. The claim records the request and the workflow it
     * is for; an existing claim passes again only for both (a retried activity, or the workflow the
     * API claimed for), so no workflow takes over another's claim by passing its request id.
     */
    async claimInstance(claim: ClaimRequest): Promise<Instance> {
      const { instanceUuid, action, requestId, shelvedImageId } = claim;
      const workflowId = claimingWorkflowId(claim.workflowId);
      const taskState = CLAIM_TASK_STATE[action];
      const instance = await getInstance(pool, instanceUuid);
      const allowed: readonly VmState[] = ALLOWED_VM_STATES[action];
      return inTransaction(pool, async (client) => {
        const { rowCount } = await client.query(
          `UPDATE instances SET task_state = $2, task_request_id = $3, task_workflow_id = $6, updated_at = now()
           WHERE uuid = $1
             AND ((task_state IS NULL AND vm_state = ANY($4) AND (launched_at IS NOT NULL OR $7)
                   AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM instance_system_metadata
                     WHERE instance_uuid = $1 AND key = 'shelved_image_id' AND value = $5)))
                  OR (task_request_id = $3 AND task_state = $2 AND task_workflow_id IS NOT DISTINCT FROM $6))`,
          // A server whose build failed never launched; it can still be deleted, as in Nova.
          [instanceUuid, taskState, requestId, allowed, shelvedImageId ?? null, workflowId, action === 'delete'],
        );
        if (rowCount === 0) {
          const current = await getInstance(client, instanceUuid);
          const [attribute, value] =
            current.taskState !== null
              ? ['task_state', current.taskState]
              : !allowed.includes(current.vmState)
                ? ['vm_state', current.vmState]
                : current.launchedAt === null && action !== 'delete'
                  ? ['launched_at', 'None']
                  : ['shelved_image_id', current.systemMetadata.shelved_image_id ?? 'None'];
          throw ApplicationFailure.create({
            type: attribute === 'task_state' ? 'UnexpectedTaskState' : 'InstanceInvalidState',
            message: `Cannot '${action}' instance ${instanceUuid} while it is in ${attribute} ${value}`,
            nonRetryable: true,
            details: [{ instanceUuid, attribute, value }],
          });
        }
        await recordAction(client, {
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
    },

    /** saveChanges, in a transaction of its own. */
    async saveInstance(request: SaveRequest): Promise<Instance> {
      return inTransaction(pool, (client) => saveChanges(client, request));
    },

    /** After a failed action: task_state := null, if this request still holds the instance. */
    async releaseInstance({
      instanceUuid,
      requestId,
      powerState,
    }: {
      instanceUuid: string;
      requestId: string;
      /** The power_state the instance is left in, when the action changed it back. */
      powerState?: PowerState;
    }): Promise<void> {
      await pool.query(
        `UPDATE instances SET task_state = NULL, power_state = COALESCE($3, power_state), updated_at = now()
          WHERE uuid = $1 AND task_request_id = $2`,
        [instanceUuid, requestId, powerState ?? null],
      );
    },

    /**
     * The last step of a delete: the instance becomes vm_state deleted, on no host, and no lookup
     * of live instances finds it again. A retry of a delete that committed finds it done.
     */
    async markInstanceDeleted({ instanceUuid, requestId }: { instanceUuid: string; requestId: string }): Promise<void> {
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
      // Its MAC addresses go back to the pool, as Neutron deletes a deleted server's ports.
      await pool.query('UPDATE ports SET deleted = true WHERE instance_uuid = $1', [instanceUuid]);
    },

    /** Records a new instance, vm_state building with task spawning; a retry finds its own row. */
    async createInstance(request: CreateInstanceRequest): Promise<Instance> {
      const { flavor } = request;
      const workflowId = claimingWorkflowId(request.workflowId);
      return inTransaction(pool, async (client) => {
        const { rowCount } = await client.query(
          `INSERT INTO instances (uuid, display_name, project_id, user_id, vm_state, task_state, task_request_id,
             image_ref, flavorid, flavor_name, vcpus, memory_mb, root_gb, ephemeral_gb, swap, requested_availability_zone,
             task_workflow_id)
           VALUES ($1, $2, $3, $4, 'building', 'spawning', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT (uuid) DO NOTHING`,
          [
            request.uuid,
            request.displayName,
            request.projectId,
            request.userId,
            request.requestId,
            request.imageRef,
            flavor.flavorid,
            flavor.name,
            flavor.vcpus,
            flavor.memoryMb,
            flavor.rootGb,
            flavor.ephemeralGb,
            flavor.swap,
            request.availabilityZone,
            workflowId,
          ],
        );
        if (rowCount === 1) actionsStarted.inc({ action: 'create' });
        // An existing row is this build's own (the API's record, or a retry) only if it is still
        // spawning for this request and this workflow, as a claim.
        const own =
          rowCount === 1 ||
          (
            await client.query(
              `SELECT 1 FROM instances WHERE uuid = $1 AND task_state = 'spawning' AND task_request_id = $2
                 AND task_workflow_id IS NOT DISTINCT FROM $3`,
              [request.uuid, request.requestId, workflowId],
            )
          ).rowCount === 1;
        if (!own) {
          throw ApplicationFailure.create({
            type: 'InstanceExists',
            message: `Instance ${request.uuid} already exists.`,
            nonRetryable: true,
          });
        }
        await writeSystemMetadata(client, request.uuid, request.systemMetadata);
        for (const bdm of request.blockDeviceMappings) {
          await client.query(
            `INSERT INTO block_device_mappings (instance_uuid, boot_index, source_type, destination_type, image_id,
               volume_id, volume_size_gb, device_name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (instance_uuid, device_name) DO NOTHING`,
            [
              request.uuid,
              bdm.bootIndex,
              bdm.sourceType,
              bdm.destinationType,
              bdm.imageId,
              bdm.volumeId,
              bdm.volumeSizeGb,
              bdm.deviceName,
            ],
          );
        }
        for (const port of request.ports) await insertPort(client, request.uuid, port);
        await recordAction(client, {
          instanceUuid: request.uuid,
          action: 'create',
          requestId: request.requestId,
          workflowId,
        });
        return getInstance(client, request.uuid);
      });
    },

    /**
     * The host the scheduler would pick (lib/scheduler.ts), for the API's early answer to an
     * unshelve onto a host or zone; nothing is reserved: placeInstance does that.
     */
    async selectDestination(request: DestinationRequest): Promise<Destination> {
      return destinationOf(selectHost(await hostStates(pool, request.instanceUuid), request));
    },

    /**
     * Picks the instance's host and records it on the instance in one transaction, under a lock
     * that every placement takes: two requests never both count the same free capacity, and from
     * this commit the instance counts against its host (placed, it is no longer offloaded's zero).
     */
    async placeInstance(request: PlacementRequest): Promise<{ destination: Destination; instance: Instance }> {
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
    },
  });
}

export type DatabaseActivities = ReturnType<typeof createDatabaseActivities>;

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
  NOT forced_down AND updated_at > now() - make_interval(secs => ${SERVICE_DOWN_SECONDS}) AS up`;

/** The compute services, by host name; only `host`'s when it is given. */
export async function listComputeServices(pool: Pool, host?: string): Promise<ComputeService[]> {
  const { rows } = await pool.query(
    // eslint-disable-next-line no-restricted-syntax -- a constant column list, values as parameters
    `SELECT ${SERVICE_COLUMNS} FROM compute_nodes WHERE $1::text IS NULL OR host = $1 ORDER BY host`,
    [host ?? null],
  );
  return rows.map(serviceFromRow);
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
    `UPDATE compute_nodes SET disabled = coalesce($2, disabled),
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

/** Where the database places an instance, as a compute host checks it against what it holds. */
export interface InstancePlacement {
  host: string | null;
  taskState: TaskState | null;
  deleted: boolean;
}

/** The placements of these instances, deleted ones included; an instance never recorded has none. */
export async function instancePlacements(pool: Pool, instanceUuids: string[]): Promise<Map<string, InstancePlacement>> {
  const { rows } = await pool.query(
    'SELECT uuid, host, task_state, deleted_at IS NOT NULL AS deleted FROM instances WHERE uuid = ANY($1::uuid[])',
    [instanceUuids],
  );
  return new Map(rows.map((row) => [row.uuid, { host: row.host, taskState: row.task_state, deleted: row.deleted }]));
}
