// One transaction on a connection of its own, for the writes that must land together.
import type { Pool, PoolClient } from 'pg';

/** Where a read runs: the pool, or the connection of a transaction under way (to see its writes). */
export type Queryable = Pool | PoolClient;

/** Runs `work` in a transaction: committed when it returns, rolled back when it throws. */
export async function inTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
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
