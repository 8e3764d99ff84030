// The reconciler, run every RECONCILE_INTERVAL seconds by a Temporal Schedule: it settles what
// no workflow will settle any more. Claims whose workflow is closed (terminated, say) are
// released as that action's rollback would have; power states follow what libvirt shows (Nova's
// _sync_power_states); snapshot images a dead action left that nothing needs are deleted. Each item is
// best effort: one that fails is logged and tried again by the next run.
import { log, setCurrentDetails } from '@temporalio/workflow';
import type { StrandedClaim } from '../lib/db/reconciler.js';
import { PowerState, rootVolume, SHELVE_TASK_STATES, TaskState, VmState } from '../lib/nova.js';
import { actionLog, type ComputeHosts, computeHosts, images, reconciler, temporal } from './activities.js';
import { applicationFailureOf, isFailure } from './failures.js';
import { checkedSeconds } from './input.js';

/** The API claims just before it starts the workflow: a younger claim may not have one yet. */
const DEFAULT_GRACE_SECONDS = 120;
/** A host that does not take a step this soon is skipped; the next run tries it again. */
const HOST_TIMEOUT_SECONDS = 30;

export interface ReconcileInput {
  /** Seconds a claim or an image must have stood unchanged; 120 when absent. */
  graceSeconds?: number;
  /** Only these instances (and their images); all when absent. */
  instanceUuids?: string[];
}

/** What the run did, as the Web UI shows its result. */
export interface ReconcileSummary {
  claimsReleased: number;
  powerStatesSynced: number;
  imagesDeleted: number;
  /** Items that failed (logged each): the next run tries them again. */
  failures: number;
}

export async function reconcileInstances(input: ReconcileInput = {}): Promise<ReconcileSummary> {
  const graceSeconds = checkedSeconds('reconcileInstances', 'graceSeconds', input.graceSeconds, 0);
  const scope = { graceSeconds: graceSeconds ?? DEFAULT_GRACE_SECONDS, instanceUuids: input.instanceUuids ?? null };
  const compute = computeHosts(HOST_TIMEOUT_SECONDS);
  const summary: ReconcileSummary = { claimsReleased: 0, powerStatesSynced: 0, imagesDeleted: 0, failures: 0 };
  const bestEffort = async (what: string, item: object, work: () => Promise<number>) => {
    try {
      return await work();
    } catch (error) {
      log.warn(`reconciler: ${what} failed`, { ...item, error: String(applicationFailureOf(error)) });
      summary.failures += 1;
      return 0;
    }
  };

  /** What a step works through; none when it cannot be listed now (Glance restarting, say): the next run will. */
  const listed = async <T>(what: string, list: () => Promise<T[]>): Promise<T[]> => {
    try {
      return await list();
    } catch (error) {
      log.warn(`reconciler: listing ${what} failed`, { error: String(applicationFailureOf(error)) });
      summary.failures += 1;
      return [];
    }
  };

  setCurrentDetails('releasing claims whose workflow is closed');
  for (const claim of await listed('claims', () => reconciler.listClaims(scope))) {
    summary.claimsReleased += await bestEffort('release of a claim', claim, () => settleClaim(claim, compute));
  }

  setCurrentDetails('syncing power states from libvirt');
  for (const host of await listed('hosts', () => reconciler.listUpHosts())) {
    summary.powerStatesSynced += await bestEffort('power state sync', { host }, async () =>
      reconciler.syncPowerStates({
        host,
        powerStates: await compute(host).listInstancePowerStates(),
        instanceUuids: scope.instanceUuids,
      }),
    );
  }

  setCurrentDetails('deleting orphaned snapshot images');
  for (const image of await listed('snapshot images', () => reconciler.listOrphanedSnapshots(scope))) {
    summary.imagesDeleted += await bestEffort('delete of an orphaned snapshot image', image, async () => {
      await images.deleteSnapshotImage({ imageId: image.imageId });
      return 1;
    });
  }

  log.info('reconciler: done', { ...summary });
  return summary;
}

/**
 * Releases a claim whose workflow is closed or gone, leaving the instance as that action's
 * rollback would: a build ERROR and off its host, an unshelve caught spawning back to offloaded
 * with no domain left, a shelve or a delete free with the power state its domain shows. Its
 * action ends as Error, saying why. Returns 1 when it released the claim, 0 when it left it.
 */
async function settleClaim(claim: StrandedClaim, compute: ComputeHosts): Promise<number> {
  const status = await temporal.closedWorkflowStatus({ workflowId: claim.workflowId });
  if (!status) return 0;
  const { instanceUuid, host, vmState, taskState } = claim;
  const built = vmState === VmState.BUILDING;
  const spawnedFromSnapshot = vmState === VmState.SHELVED_OFFLOADED && host !== null;
  let released: boolean;
  if (built || spawnedFromSnapshot) {
    // No half-built domain stays behind, and the host's capacity is not counted for it.
    if (host) await compute(host).destroyInstance({ instanceUuid });
    released = await reconciler.releaseClaim({
      claim,
      offHost: true,
      ...(built ? { vmState: VmState.ERROR } : { powerState: PowerState.SHUTDOWN }),
    });
  } else {
    const powerState = host ? ((await compute(host).listInstancePowerStates())[instanceUuid] ?? null) : null;
    if (host && (await offloadCanFinish(claim, powerState))) {
      // Its domain may be whole, half-removed, or being removed by a step that outlived the
      // workflow: only finishing the removal leaves an instance that can be unshelved.
      await compute(host).destroyInstance({ instanceUuid });
      released = await reconciler.releaseClaim({
        claim,
        vmState: VmState.SHELVED_OFFLOADED,
        offHost: true,
        powerState: PowerState.SHUTDOWN,
      });
    } else {
      // A shelve may have powered a running guest off: the instance is ACTIVE, its guest as libvirt shows.
      const shelving = SHELVE_TASK_STATES.includes(taskState) && vmState !== VmState.STOPPED;
      released = await reconciler.releaseClaim({
        claim,
        ...(shelving ? { vmState: VmState.ACTIVE } : {}),
        ...(powerState !== null ? { powerState } : {}),
      });
    }
  }
  if (!released) return 0;
  await actionLog.finishAction({
    requestId: claim.requestId,
    result: 'Error',
    reason: `released by the reconciler: workflow ${claim.workflowId} was ${status}`,
  });
  return 1;
}

/**
 * True when a stranded claim is an offload (or a volume-backed shelve, which offloads at once) that
 * may be finished: its guest is off, and the disk is safe elsewhere, in the snapshot the shelve
 * stored (checked as the offload checks it) or on the volume. An offload removes nothing before
 * that check, so one that fails it still has its domain, unless the snapshot went afterwards.
 */
async function offloadCanFinish(claim: StrandedClaim, powerState: PowerState | null): Promise<boolean> {
  const { instanceUuid, vmState, taskState } = claim;
  const offloading = vmState === VmState.SHELVED && taskState === TaskState.SHELVING_OFFLOADING;
  if (!offloading && taskState !== TaskState.SHELVING) return false;
  const instance = await reconciler.getInstance({ instanceUuid });
  const guestOff = powerState === null || powerState === PowerState.SHUTDOWN;
  if (rootVolume(instance)) return guestOff;
  if (!offloading) return false;
  try {
    await images.verifySnapshotImage({ instance });
    return true;
  } catch (error) {
    if (!isFailure(error, 'SnapshotUnverified')) throw error;
    // Nothing on the host to go back to: offloaded is the honest state.
    return powerState === null;
  }
}
