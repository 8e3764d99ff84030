// Shelve: power the instance off, snapshot its root disk into Glance, record it SHELVED, and
// offload it now, later or never as shelved_offload_time says (docs/nova-behaviour.md §1.3). A failure deletes the
// half-made image and frees the instance for another try.
import { ParentClosePolicy, setCurrentDetails, startChild, uuid4 } from '@temporalio/workflow';
import { type Instance, PowerState, rootVolume, shelvedAtTimestamp, TaskState, VmState } from '../lib/nova.js';
import { offloadTimerWorkflowId } from '../lib/temporal.js';
import { recordAction, recordStep } from './action-log.js';
import { type ComputeHosts, computeHosts, database, images, settings } from './activities.js';
import { applicationFailureOf, isFailure } from './failures.js';
import { type ActionInput, checkedInput, checkedSeconds, tagWorkflow } from './input.js';
import { shelvedOffloadTimer } from './offload-timer.js';
import { offloadInstance } from './offload.js';
import { settling, withRollback } from './rollback.js';
import { claim } from './steps.js';

/** How many times a shelve starts over in a new image before it fails. */
const MAX_IMAGE_REPLACEMENTS = 3;

export interface ShelveInput extends ActionInput {
  /**
   * Seconds to wait for a clean shutdown; when absent, the image's os_shutdown_timeout, else the
   * conductor's SHUTDOWN_TIMEOUT.
   */
  shutdownTimeout?: number;
  /** -1 never offload, 0 offload now, N > 0 after N seconds; the conductor's SHELVED_OFFLOAD_TIME when absent. */
  shelvedOffloadTime?: number;
}

/**
 * The image's own clean-shutdown timeout, which overrides the configured one (Nova reads
 * image_os_shutdown_timeout from system_metadata); undefined when unset or not a whole number >= 0,
 * as Nova falls back to shutdown_timeout for a value it cannot read.
 */
export function imageShutdownTimeout(instance: Pick<Instance, 'systemMetadata'>): number | undefined {
  const value = instance.systemMetadata['image_os_shutdown_timeout']?.trim();
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const seconds = Number(value);
  return Number.isSafeInteger(seconds) ? seconds : undefined;
}

export async function shelveInstance(rawInput: ShelveInput): Promise<Instance> {
  const input = checkedInput('shelveInstance', rawInput);
  const { instanceUuid, requestId } = input;
  checkedSeconds('shelveInstance', 'shutdownTimeout', input.shutdownTimeout, 0);
  checkedSeconds('shelveInstance', 'shelvedOffloadTime', input.shelvedOffloadTime, -1);
  tagWorkflow({ instanceUuid, action: 'shelve' });

  setCurrentDetails('claiming the instance');
  const claimed = await claim({
    instanceUuid,
    action: 'shelve',
    requestId,
    userId: input.userId,
    projectId: input.projectId,
  });
  const host = claimed.host!;
  tagWorkflow({ host });
  const release = () => database.releaseInstance({ instanceUuid, requestId });

  return recordAction(
    requestId,
    async () => {
      const defaults = await settings.conductorSettings();
      const compute = computeHosts(defaults.computeHostTimeout);
      // A paused guest cannot answer a shutdown request: always a hard power-off (docs/nova-behaviour.md §8.5).
      const shutdownTimeout =
        claimed.powerState === PowerState.PAUSED
          ? 0
          : (input.shutdownTimeout ?? imageShutdownTimeout(claimed) ?? defaults.shutdownTimeout);
      const shelvedOffloadTime = input.shelvedOffloadTime ?? defaults.shelvedOffloadTime;
      if (rootVolume(claimed)) return shelveVolumeBacked(claimed, requestId, shutdownTimeout, compute);
      // Chosen here, so that every retry of the steps below works on this one image.
      let imageId = uuid4();
      const save = (expected: TaskState, changes: Parameters<typeof database.saveInstance>[0]['changes'], extra = {}) =>
        database.saveInstance({ instanceUuid, requestId, expectedTaskStates: [expected], changes, ...extra });

      const shelved = await withRollback(
        async () => {
          const powerState = await recordStep(
            {
              requestId,
              name: 'compute_power_off_instance',
              host,
              details: `powering off on ${host} (clean shutdown for up to ${shutdownTimeout}s, then destroy)`,
            },
            () => compute(host).powerOffInstance({ instanceUuid, timeout: shutdownTimeout }),
          );
          let instance = await save(TaskState.SHELVING, {
            powerState,
            taskState: TaskState.SHELVING_IMAGE_PENDING_UPLOAD,
          });

          await recordStep(
            { requestId, name: 'create_snapshot_image', host: null, details: `creating image ${imageId} in Glance` },
            () => images.createSnapshotImage({ instance, imageId }),
          );
          instance = await save(TaskState.SHELVING_IMAGE_PENDING_UPLOAD, {
            taskState: TaskState.SHELVING_IMAGE_UPLOADING,
          });

          const uploaded = await recordStep(
            {
              requestId,
              name: 'compute_snapshot_instance',
              host,
              details: `uploading the root disk into image ${imageId}`,
            },
            async () => {
              for (let replaced = 0; ; replaced++) {
                try {
                  return await compute(host).snapshotInstance({ instance, imageId });
                } catch (error) {
                  // An image stuck after an interrupted upload, or holding bytes this shelve cannot
                  // vouch for, is never used: a new one is, a few times at most.
                  const unusable =
                    isFailure(error, 'ImageUploadInterrupted') || isFailure(error, 'ImageUploadMismatch');
                  if (!unusable || replaced >= MAX_IMAGE_REPLACEMENTS) throw error;
                  setCurrentDetails(`replacing image ${imageId}: ${(applicationFailureOf(error) as Error).message}`);
                  await images.deleteSnapshotImage({ imageId });
                  imageId = uuid4();
                  await images.createSnapshotImage({ instance, imageId });
                }
              }
            },
          );

          setCurrentDetails('recording the instance as shelved');
          // The snapshot is whole in Glance: an upload that completed is kept, cancelled or not.
          return settling(() =>
            save(
              TaskState.SHELVING_IMAGE_UPLOADING,
              {
                vmState: VmState.SHELVED,
                taskState: shelvedOffloadTime === 0 ? TaskState.SHELVING_OFFLOADING : null,
                powerState: PowerState.SHUTDOWN,
              },
              {
                setSystemMetadata: {
                  shelved_at: shelvedAtTimestamp(new Date()),
                  shelved_image_id: imageId,
                  shelved_host: host,
                  // What the offload and the unshelve check the snapshot against.
                  shelved_image_os_hash_algo: uploaded.osHashAlgo,
                  shelved_image_os_hash_value: uploaded.osHashValue,
                },
              },
            ),
          );
        },
        async (error) => {
          // Unlike Nova, a failed shelve leaves no orphaned image behind.
          await images.deleteSnapshotImage({ imageId });
          await rollBack(claimed, requestId, error, compute);
        },
      );

      if (shelvedOffloadTime === 0) return offloadInstance(shelved, requestId, compute);
      if (shelvedOffloadTime > 0) {
        setCurrentDetails(`starting the timer that offloads in ${shelvedOffloadTime}s`);
        // Abandoned: the timer outlives this workflow, which ends as soon as the instance is SHELVED.
        // Started even if the shelve is cancelled now: the instance is SHELVED either way.
        await settling(() =>
          startChild(shelvedOffloadTimer, {
            workflowId: offloadTimerWorkflowId(instanceUuid, imageId),
            args: [{ instanceUuid, shelvedImageId: imageId, seconds: shelvedOffloadTime }],
            parentClosePolicy: ParentClosePolicy.ABANDON,
          }),
        );
      }
      return shelved;
    },
    release,
  );
}

/**
 * A volume-backed instance takes no image: its root volume stays in the pool, so it is powered
 * off and offloaded at once, whatever shelved_offload_time says, and gets no shelved_* keys (docs/nova-behaviour.md §1.4).
 */
async function shelveVolumeBacked(
  claimed: Instance,
  requestId: string,
  shutdownTimeout: number,
  compute: ComputeHosts,
): Promise<Instance> {
  const { uuid: instanceUuid, host } = claimed;
  await withRollback(
    () =>
      recordStep(
        {
          requestId,
          name: 'compute_power_off_instance',
          host,
          details: `powering off on ${host} (clean shutdown for up to ${shutdownTimeout}s, then destroy)`,
        },
        () => compute(host!).powerOffInstance({ instanceUuid, timeout: shutdownTimeout }),
      ),
    (error) => rollBack(claimed, requestId, error, compute),
  );
  return offloadInstance(claimed, requestId, compute);
}

/**
 * Leaves the instance of a failed shelve as the shelve found it: a guest that was running runs
 * again (unless its host is the trouble), and the instance is free for another action.
 */
async function rollBack(claimed: Instance, requestId: string, error: unknown, compute: ComputeHosts): Promise<void> {
  const { uuid: instanceUuid, host } = claimed;
  let powerState: PowerState | undefined;
  if (claimed.powerState === PowerState.RUNNING && host && !isFailure(error, 'ComputeHostUnavailable')) {
    setCurrentDetails(`the shelve failed: powering the instance on again on ${host}`);
    powerState = await compute(host)
      .powerOnInstance({ instanceUuid })
      .catch(() => undefined);
  }
  await database.releaseInstance({ instanceUuid, requestId, powerState });
}
