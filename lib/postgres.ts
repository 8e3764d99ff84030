// The one way to connect to PostgreSQL: a pool that outlives its connections being dropped.
import pg from 'pg';
import { logger } from './logger.js';

export function createPool(databaseUrl: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl });
  // An idle connection the server closed (a restart, pg_terminate_backend) emits 'error' on the
  // pool, which would kill the process unhandled. The pool drops that client and connects anew.
  pool.on('error', (error) => logger.warn({ err: error }, 'PostgreSQL closed an idle connection; the pool reconnects'));
  return pool;
}
