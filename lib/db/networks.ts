// Projects' networks and their ports (Neutron's network, subnet, port and IP allocation,
// in short): one network per project and name, each on a /24 of its own.
import { randomBytes } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import type { Pool, PoolClient } from 'pg';
import { macAddress, type Port } from '../nova.js';

type FixedIp = NonNullable<Port['fixedIp']>;

/** A port as a build asks for it: its binding and address come later. */
export type NewPort = Pick<Port, 'id' | 'network' | 'macAddress'>;

/**
 * The project's network of that name, made on first use. Made in the caller's transaction, under
 * a lock of the project's network name held until it ends: a concurrent first build of the
 * project waits, then finds the network, and draws no subnet of its own to waste.
 */
async function projectNetwork(client: PoolClient, projectId: string, name: string): Promise<string> {
  const find = () => client.query('SELECT id FROM networks WHERE project_id = $1 AND name = $2', [projectId, name]);
  let { rows } = await find();
  if (rows.length === 0) {
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('vm-shelve network'), hashtext($1))`, [
      JSON.stringify([projectId, name]),
    ]);
    ({ rows } = await find());
  }
  if (rows.length === 0) {
    await client.query(
      `WITH subnet AS (SELECT nextval('network_subnets') * 256 AS offset_)
       INSERT INTO networks (project_id, name, cidr, gateway)
       SELECT $1, $2, set_masklen('10.128.0.0'::inet + offset_, 24)::cidr, '10.128.0.1'::inet + offset_ FROM subnet
       ON CONFLICT (project_id, name) DO NOTHING`,
      [projectId, name],
    );
    ({ rows } = await find());
  }
  return rows[0].id;
}

/**
 * The lowest address of the project's network `name` that no live port holds, neither the
 * network's own address, its gateway nor its broadcast. The network's row stays locked until the
 * caller's transaction ends, so two builds never take the same address.
 */
export async function allocateFixedIp(client: PoolClient, projectId: string, name: string): Promise<FixedIp> {
  const networkId = await projectNetwork(client, projectId, name);
  // A statement of its own: the next one's snapshot, taken once the lock is ours, then sees the
  // ports of the build that held it before.
  await client.query('SELECT 1 FROM networks WHERE id = $1 FOR UPDATE', [networkId]);
  const { rows } = await client.query(
    `SELECT host(n.gateway + i) AS address, n.cidr::text AS cidr, host(n.gateway) AS gateway
       FROM networks n, generate_series(1, 253) AS i
      WHERE n.id = $1
        AND NOT EXISTS (SELECT 1 FROM ports p WHERE p.network_id = n.id AND NOT p.deleted AND p.fixed_ip = n.gateway + i)
      ORDER BY i LIMIT 1`,
    [networkId],
  );
  if (rows.length === 0) {
    throw ApplicationFailure.create({
      type: 'IpAddressGenerationFailure',
      message: `No more IP addresses available on network ${networkId}.`,
      nonRetryable: true,
    });
  }
  return { address: rows[0].address, networkId, cidr: rows[0].cidr, gateway: rows[0].gateway };
}

/** How many MAC addresses a port tries before the build gives up: a collision is rare (24 bits). */
const MAC_DRAWS = 8;

/**
 * Records a port on the project's network of its name with the lowest free fixed IP there, and
 * its MAC address, or another one drawn at random when a live port holds it already: retrying
 * the same address would fail the same way for ever. A retry finds its port.
 */
export async function insertPort(
  client: PoolClient,
  instanceUuid: string,
  projectId: string,
  port: NewPort,
): Promise<void> {
  const recorded = () =>
    client.query('SELECT 1 FROM ports WHERE id = $1 AND instance_uuid = $2', [port.id, instanceUuid]);
  if ((await recorded()).rowCount === 1) return;
  const fixedIp = await allocateFixedIp(client, projectId, port.network);
  let mac = port.macAddress;
  for (let draw = 1; ; draw++) {
    // No conflict target: a MAC a live port holds does nothing (the network's lock keeps the IP free).
    await client.query(
      `INSERT INTO ports (id, instance_uuid, network, mac_address, network_id, fixed_ip)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
      [port.id, instanceUuid, port.network, mac, fixedIp.networkId, fixedIp.address],
    );
    if ((await recorded()).rowCount === 1) return;
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

/**
 * Releases the addresses held by the ports this host bound for instances deleted while it was
 * down (a local delete): its worker calls this at start, once it has removed their guests.
 * Returns how many ports it released.
 */
export async function releaseDeletedInstancePorts(pool: Pool, host: string): Promise<number> {
  const { rowCount } = await pool.query(
    `UPDATE ports p SET deleted = true FROM instances i
      WHERE i.uuid = p.instance_uuid AND i.deleted_at IS NOT NULL AND NOT p.deleted AND p.binding_host = $1`,
    [host],
  );
  return rowCount ?? 0;
}
