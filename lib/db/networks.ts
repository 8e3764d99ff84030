// Projects' networks and their ports' fixed IPs (Neutron's network, subnet and IP allocation,
// in short): one network per project and name, each on a /24 of its own.
import { ApplicationFailure } from '@temporalio/common';
import type { PoolClient } from 'pg';
import type { Port } from '../nova.js';

type FixedIp = NonNullable<Port['fixedIp']>;

/**
 * The project's network of that name, made on first use. Made in the caller's transaction: a
 * concurrent first build of the project waits for this one's insert and then finds its network.
 */
async function projectNetwork(client: PoolClient, projectId: string, name: string): Promise<string> {
  const find = () => client.query('SELECT id FROM networks WHERE project_id = $1 AND name = $2', [projectId, name]);
  let { rows } = await find();
  if (rows.length === 0) {
    // Looked up first: each insert draws a subnet, which a conflict would waste.
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
