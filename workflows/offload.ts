// Shelve-offload: free the host of a shelved instance. It then exists only in the database and
// in Glance (docs/nova-behaviour.md §1.5).
import type { Instance } from '../lib/nova.js';
import { PowerState, rootVolume, TaskState, VmState } from '../lib/nova.js';
import { recordAction, recordStep } from './action-log.js';
import { type ComputeHosts, configuredComputeHosts, database, images } from './activities.js';
import { type ActionInput, checkedInput, tagWorkflow } from './input.js';
import { settling, withRollback } from './rollback.js';
import { claim } from './steps.js';

/**
 * The offload steps, for an instance claimed with task_state shelving_offloading, or shelving
 * when a volume-backed shelve offloads at once (docs/nova-behaviour.md §1.4).
 */
export async function offloadInstance(instance: Instance, requestId: string, compute: ComputeHosts): Promise<Instance> {
  const { uuid: instanceUuid, host } = instance;
  const release = () => database.releaseInstance({ instanceUuid, requestId });
  return withRollback(
    () =>
      recordStep(
        {
          requestId,
          name: 'compute_shelve_offload_instance',
          host,
          details: `undefining the domain and removing the instance files on ${host}`,
        },
        async () => {
          // The disk goes only while its snapshot is in Glance as the shelve stored it.
          if (!rootVolume(instance)) await images.verifySnapshotImage({ instance });
          if (host) await compute(host).destroyInstance({ instanceUuid });
          // The host holds nothing of it any more: offloaded, cancelled or not.
          return settling(() =>
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
        },
      ),
    release,
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
