// Placing an instance and spawning it there, as a build and an unshelve of an offloaded instance
// do. The host is chosen and reserved in one step (the database's placement lock); when its
// compute worker does not take the spawn within SPAWN_START_TIMEOUT, another host is tried
// (Nova's alternates) instead of the action failing after COMPUTE_HOST_TIMEOUT.
import { log } from '@temporalio/workflow';
import type { Destination, PlacementRequest } from '../lib/db/placement.js';
import type { Instance } from '../lib/nova.js';
import { recordStep } from './action-log.js';
import { type ComputeHosts, computeHosts, database, settings } from './activities.js';
import { isFailure } from './failures.js';
import { tagWorkflow } from './input.js';
import { withRollback } from './rollback.js';

/** The chosen host and two alternates, as Nova's scheduler max_attempts. */
const MAX_HOSTS = 3;

export interface Placed {
  destination: Destination;
  /** The instance as recorded on its host. */
  instance: Instance;
  compute: ComputeHosts;
}

/**
 * Places the instance and runs `spawn` on the host; on failure runs `rollback` with the host the
 * instance was last placed on (null when none could be), and fails with the failure's reason.
 * A host that never took the spawn is not asked to undo it: what an earlier attempt may have left
 * there, its compute worker removes when it starts, as the instance no longer names it.
 */
export async function placeAndSpawn<T>(
  requestId: string,
  placement: Omit<PlacementRequest, 'excludedHosts'>,
  spawn: (placed: Placed) => Promise<T>,
  rollback: (host: string | null, compute: ComputeHosts, error: unknown) => Promise<void>,
): Promise<T> {
  const { computeHostTimeout, spawnStartTimeout } = await settings.conductorSettings();
  const compute = computeHosts(computeHostTimeout);
  const spawnCompute = computeHosts(Math.min(spawnStartTimeout, computeHostTimeout));
  const tried: string[] = [];
  let host: string | null = null;
  return withRollback(
    async () => {
      for (;;) {
        const { destination, instance } = await recordStep(
          {
            requestId,
            name: 'schedule_instances',
            host: null,
            details: placement.requestedHost ? `checking host ${placement.requestedHost}` : 'scheduling',
          },
          () => database.placeInstance({ ...placement, excludedHosts: tried }),
        );
        host = destination.host;
        tagWorkflow({ host });
        try {
          return await spawn({ destination, instance, compute: spawnCompute });
        } catch (error) {
          const alternate =
            isFailure(error, 'ComputeHostUnavailable') && !placement.requestedHost && tried.length + 1 < MAX_HOSTS;
          if (!alternate) throw error;
          log.warn('compute host did not take the spawn: trying another host', { host, requestId });
          tried.push(destination.host);
        }
      }
    },
    (error) => rollback(host, compute, error),
  );
}

/**
 * Undoes a spawn on `host`, best effort: the domain and files go unless the host's worker is not
 * taking steps (it would only wait again); either way the caller then takes the instance off the
 * host, and what is left there its compute worker removes when it starts.
 */
export async function undoSpawn(
  host: string | null,
  compute: ComputeHosts,
  error: unknown,
  instanceUuid: string,
): Promise<void> {
  if (!host || isFailure(error, 'ComputeHostUnavailable')) return;
  await compute(host)
    .destroyInstance({ instanceUuid })
    .catch((failure: unknown) => log.warn('spawn not undone on host', { host, instanceUuid, error: String(failure) }));
}
