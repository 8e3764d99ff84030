// The one way to connect to PostgreSQL: a pool that outlives its connections being dropped, and
// a session lock that a process holds for its whole life.
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { logger } from './logger.js';

export function createPool(databaseUrl: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl });
  // An idle connection the server closed (a restart, pg_terminate_backend) emits 'error' on the
  // pool, which would kill the process unhandled. The pool drops that client and connects anew.
  pool.on('error', (error) => logger.warn({ err: error }, 'PostgreSQL closed an idle connection; the pool reconnects'));
  return pool;
}

/** Who holds a session lock: PostgreSQL shows it as the connection's application_name. */
function lockHolderName(what: string): string {
  // application_name keeps 63 bytes: the pid and machine come first.
  return `vm-shelve pid ${process.pid} on ${hostname()}: ${what}`.slice(0, 63);
}

/** A lock another process holds; its holder as PostgreSQL shows it, when it could be read. */
export class AdvisoryLockHeld extends Error {
  constructor(
    readonly lockName: string,
    readonly holder: string | null,
  ) {
    super(`The lock '${lockName}' is held by ${holder ?? 'another session'}`);
    this.name = 'AdvisoryLockHeld';
  }
}

export interface AdvisoryLock {
  /**
   * Settles when the lock is lost for good: PostgreSQL dropped its connection and another
   * session took the lock before this one could take it again.
   */
  readonly lost: Promise<AdvisoryLockHeld>;
  release(): Promise<void>;
}

const LOCK_NAMESPACE = 'vm-shelve';
const RETAKE_DELAY_MS = 1000;

/**
 * Takes a session-level advisory lock named `name` for as long as the process holds it, on a
 * connection of its own (a pooled connection is shared, and its lock with it). A lock another
 * session holds fails with AdvisoryLockHeld. When PostgreSQL drops the connection (a restart, a
 * failover, pg_terminate_backend) the lock goes with it: it is taken again on a new connection as
 * soon as the server answers, and `lost` settles if another session took it meanwhile.
 */
export async function holdAdvisoryLock(databaseUrl: string, name: string, what: string): Promise<AdvisoryLock> {
  let released = false;
  let client: pg.Client | undefined;
  let markLost: (held: AdvisoryLockHeld) => void = () => undefined;
  const lost = new Promise<AdvisoryLockHeld>((resolve) => (markLost = resolve));

  const take = async (): Promise<void> => {
    const session = new pg.Client({
      connectionString: databaseUrl,
      application_name: lockHolderName(what),
      keepAlive: true,
    });
    // Without a listener, the connection's end would be an uncaught error.
    session.on('error', (error) =>
      logger.warn({ err: error, lock: name }, 'PostgreSQL closed the connection holding a lock'),
    );
    await session.connect();
    try {
      const { rows } = await session.query<{ taken: boolean; holder: string | null }>(
        `SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS taken,
                (SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                    AND l.classid = hashtext($1)::oid AND l.objid = hashtext($2)::oid AND l.pid <> pg_backend_pid()
                  LIMIT 1) AS holder`,
        [LOCK_NAMESPACE, name],
      );
      if (!rows[0]!.taken) throw new AdvisoryLockHeld(name, rows[0]!.holder);
    } catch (error) {
      await session.end().catch(() => undefined);
      throw error;
    }
    session.once('end', () => {
      if (!released) void retake();
    });
    client = session;
    // Released while this was being taken again: not held past the release.
    if (released) await session.end();
  };

  const retake = async (): Promise<void> => {
    while (!released) {
      try {
        await take();
        logger.info({ lock: name }, 'lock taken again on a new PostgreSQL connection');
        return;
      } catch (error) {
        if (error instanceof AdvisoryLockHeld) {
          markLost(error);
          return;
        }
        await sleep(RETAKE_DELAY_MS);
      }
    }
  };

  await take();
  return {
    lost,
    async release() {
      released = true;
      await client?.end();
    },
  };
}
