// Instances as the database records them (Nova's instance_get, instance_get_all, instance_create):
// the instance row with its system metadata, block device mappings and ports.
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient, QueryResultRow } from 'pg';
import { actionsStarted } from '../metrics.js';
import { type BlockDeviceMapping, type Flavor, type Instance, isUuid, type Port, type TaskState } from '../nova.js';
import { actionStart } from './instance-actions.js';
import { insertPort, type NewPort } from './networks.js';
import { inTransaction, type Queryable } from './transactions.js';

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
  /** The ports to make, each on the project's network of its name, with a fixed IP drawn there. */
  ports: NewPort[];
  /** The build workflow the new instance is held for, as ClaimRequest.workflowId. */
  workflowId?: string;
}

/** Where the database places an instance, as a compute host checks it against what it holds. */
export interface InstancePlacement {
  host: string | null;
  taskState: TaskState | null;
  deleted: boolean;
}

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
  db: Queryable,
  table: 'ports' | 'block_device_mappings' | 'instance_system_metadata',
  orderBy: string,
  instanceUuids: string[],
): Promise<Map<string, QueryResultRow[]>> {
  // A port comes with its network's subnet.
  const from =
    table === 'ports'
      ? `ports LEFT JOIN (SELECT id AS network_id, cidr::text AS cidr, host(gateway) AS gateway FROM networks) n
           USING (network_id)`
      : table;
  const columns = table === 'ports' ? '*, host(fixed_ip) AS fixed_address' : '*';
  const { rows } = await db.query(
    // eslint-disable-next-line no-restricted-syntax -- names of this module's choosing, values as parameters
    `SELECT ${columns} FROM ${from} WHERE instance_uuid = ANY($1::uuid[]) ORDER BY instance_uuid, ${orderBy}`,
    [instanceUuids],
  );
  const grouped = new Map<string, QueryResultRow[]>();
  for (const row of rows) grouped.set(row.instance_uuid, [...(grouped.get(row.instance_uuid) ?? []), row]);
  return grouped;
}

/** Whole instances from their rows: three more queries, however many instances. */
async function instancesFromRows(db: Queryable, rows: QueryResultRow[]): Promise<Instance[]> {
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
        fixedIp:
          port.network_id === null
            ? null
            : { address: port.fixed_address, networkId: port.network_id, cidr: port.cidr, gateway: port.gateway },
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

export async function getInstance(db: Queryable, instanceUuid: string): Promise<Instance> {
  if (!isUuid(instanceUuid)) throw instanceNotFound(instanceUuid);
  const { rows } = await db.query('SELECT * FROM instances WHERE uuid = $1 AND deleted_at IS NULL', [instanceUuid]);
  if (rows.length === 0) throw instanceNotFound(instanceUuid);
  return (await instancesFromRows(db, rows))[0]!;
}

/** The instances of a project, or of all projects when `projectId` is null, newest first. */
export async function listInstances(db: Queryable, projectId: string | null): Promise<Instance[]> {
  const { rows } = await db.query(
    `SELECT * FROM instances WHERE ($1::text IS NULL OR project_id = $1) AND deleted_at IS NULL
      ORDER BY created_at DESC, uuid`,
    [projectId],
  );
  return instancesFromRows(db, rows);
}

/** The placements of these instances, deleted ones included; an instance never recorded has none. */
export async function instancePlacements(pool: Pool, instanceUuids: string[]): Promise<Map<string, InstancePlacement>> {
  const { rows } = await pool.query(
    'SELECT uuid, host, task_state, deleted_at IS NOT NULL AS deleted FROM instances WHERE uuid = ANY($1::uuid[])',
    [instanceUuids],
  );
  return new Map(rows.map((row) => [row.uuid, { host: row.host, taskState: row.task_state, deleted: row.deleted }]));
}

export async function writeSystemMetadata(
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
 * Records a new instance, vm_state building with task spawning, held for `request.workflowId`;
 * a retry (or the build workflow after the API's record) finds its own row.
 */
export async function createInstance(pool: Pool, request: CreateInstanceRequest): Promise<Instance> {
  const { flavor } = request;
  const workflowId = request.workflowId ?? null;
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
    for (const port of request.ports) await insertPort(client, request.uuid, request.projectId, port);
    await actionStart(client, {
      instanceUuid: request.uuid,
      action: 'create',
      requestId: request.requestId,
      workflowId,
    });
    return getInstance(client, request.uuid);
  });
}
