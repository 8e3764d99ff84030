// Shelve-offload: free the host of a shelved instance. It then exists only in the database and
// in Glance (docs/nova-behaviour.md §1.5).
import type { Instance } from '../lib/nova.js';
import { PowerState, rootVolume, TaskState, VmState } from '../lib/nova.js';
import { recordAction, recordStep } from './action-log.js';
import { type ComputeHosts, configuredComputeHosts, database, images } from './activities.js';
import { applicationFailureOf } from './failures.js';
import { type ActionInput, checkedInput, tagWorkflow } from './input.js';
import { settling } from './rollback.js';
import { claim } from './steps.js';

/**
 * The offload steps, for an instance claimed with task_state shelving_offloading, or shelving
 * when a volume-backed shelve offloads at once (docs/nova-behaviour.md §1.4).
 */
export async function offloadInstance(instance: Instance, requestId: string, compute: ComputeHosts): Promise<Instance> {
  const { uuid: instanceUuid, host } = instance;
  // The host holds nothing of it any more: offloaded, cancelled or not.
  const saveOffloaded = () =>
    settling(() =>
      database.saveInstance({
        instanceUuid,
        requestId,
        expectedTaskStates: [TaskState.SHELVING_OFFLOADING, TaskState.SHELVING],
        changes: {
          vmState: VmState.SHELVED_OFFLOADED,
          taskState: null,
          powerState: PowerState.SHUTDOWN,
          host: null,
          node: null,
          availabilityZone: null,
        },
      }),
    );
  let diskSafe = false;
  try {
    return await recordStep(
      {
        requestId,
        name: 'compute_shelve_offload_instance',
        host,
        details: `undefining the domain and removing the instance files on ${host}`,
      },
      async () => {
        // The disk goes only while its snapshot is in Glance as the shelve stored it.
        if (!rootVolume(instance)) await images.verifySnapshotImage({ instance });
        diskSafe = true;
        if (host) await compute(host).destroyInstance({ instanceUuid });
        return saveOffloaded();
      },
    );
  } catch (error) {
    // A removal that failed part-way (its worker killed, say) may have taken the domain: SHELVED
    // with no domain could not be unshelved in place, so it is offloaded, as it was asked to be.
    if (diskSafe && host && (await settling(() => domainGone(compute, host, instanceUuid)))) return saveOffloaded();
    await settling(() => database.releaseInstance({ instanceUuid, requestId }));
    throw applicationFailureOf(error);
  }
}

/** True when the host answers and has no domain of the instance; false when it has one or is silent. */
function domainGone(compute: ComputeHosts, host: string, instanceUuid: string): Promise<boolean> {
  return compute(host)
    .listInstancePowerStates()
    .then(
      (powerStates) => !(instanceUuid in powerStates),
      () => false,
    );
}

/** Offloads a SHELVED instance (admin-only through the API). */
export async function shelveOffloadInstance(rawInput: ActionInput): Promise<Instance> {
  const { instanceUuid, requestId, userId, projectId } = checkedInput('shelveOffloadInstance', rawInput);
  tagWorkflow({ instanceUuid, action: 'shelveOffload' });
  const instance = await claim({
    instanceUuid,
    action: 'shelveOffload',
    requestId,
    userId,
    projectId,
  });
  tagWorkflow({ host: instance.host });
  return recordAction(
    requestId,
    async () => offloadInstance(instance, requestId, await configuredComputeHosts()),
    () => database.releaseInstance({ instanceUuid, requestId }),
  );
}
