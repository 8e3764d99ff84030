// Shelve: power the instance off, snapshot its root disk into Glance, record it SHELVED, and
// offload it now or never as shelved_offload_time says (spec §1.3). A failure deletes the
// half-made image and frees the instance for another try.
import { ParentClosePolicy, startChild, uuid4 } from '@temporalio/workflow';
import { type Instance, PowerState, shelvedAtTimestamp, TaskState, VmState } from '../lib/nova.js';
import { offloadTimerWorkflowId } from '../lib/temporal.js';
import { compute, database, images, settings } from './activities.js';
import { type ActionInput, checkedInput, reason, step, tagWorkflow, withRollback } from './common.js';
import { offloadInstance } from './offload.js';
import { shelvedOffloadTimer } from './offload-timer.js';

export interface ShelveInput extends ActionInput {
  /** Seconds to wait for a clean shutdown; the conductor's SHUTDOWN_TIMEOUT when absent. */
  shutdownTimeout?: number;
  /** -1 never offload, 0 offload now, N > 0 after N seconds; the conductor's SHELVED_OFFLOAD_TIME when absent. */
  shelvedOffloadTime?: number;
}

export async function shelveInstance(rawInput: ShelveInput): Promise<Instance> {
  const input = checkedInput('shelveInstance', rawInput);
  const { instanceUuid, requestId } = input;
  tagWorkflow({ instanceUuid, action: 'shelve' });

  step('claiming the instance');
  let instance = await database
    .claimInstance({ instanceUuid, action: 'shelve', taskState: TaskState.SHELVING, requestId })
    .catch((error: unknown) => Promise.reject(reason(error)));
  const host = instance.host!;
  tagWorkflow({ host });
  const defaults = await settings.shelveSettings();
  const shutdownTimeout = input.shutdownTimeout ?? defaults.shutdownTimeout;
  const shelvedOffloadTime = input.shelvedOffloadTime ?? defaults.shelvedOffloadTime;
  // Chosen here, so that every retry of the steps below works on this one image.
  const imageId = uuid4();

  const save = (expected: TaskState, changes: Parameters<typeof database.saveInstance>[0]['changes'], extra = {}) =>
    database.saveInstance({ instanceUuid, requestId, expectedTaskStates: [expected], changes, ...extra });

  instance = await withRollback(
    async () => {
      step(`powering off on ${host} (clean shutdown for up to ${shutdownTimeout}s, then destroy)`);
      const powerState = await compute(host).powerOffInstance({ instanceUuid, timeout: shutdownTimeout });
      instance = await save(TaskState.SHELVING, { powerState, taskState: TaskState.SHELVING_IMAGE_PENDING_UPLOAD });

      step(`creating snapshot image ${imageId} in Glance`);
      await images.createSnapshotImage({ instance, imageId });
      instance = await save(TaskState.SHELVING_IMAGE_PENDING_UPLOAD, {
        taskState: TaskState.SHELVING_IMAGE_UPLOADING,
      });

      step(`uploading the root disk into image ${imageId}`);
      await compute(host).snapshotInstance({ instance, imageId });

      step('recording the instance as shelved');
      return save(
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
          },
        },
      );
    },
    async () => {
      // Unlike Nova, a failed shelve leaves no orphaned image behind.
      await images.deleteImage({ owner: instance, imageId });
      await database.releaseInstance({ instanceUuid, requestId });
    },
  );

  if (shelvedOffloadTime === 0) return offloadInstance(instance, requestId);
  if (shelvedOffloadTime > 0) {
    step(`starting the timer that offloads in ${shelvedOffloadTime}s`);
    // Abandoned: the timer outlives this workflow, which ends as soon as the instance is SHELVED.
    await startChild(shelvedOffloadTimer, {
      workflowId: offloadTimerWorkflowId(instanceUuid, imageId),
      args: [{ instanceUuid, shelvedImageId: imageId, seconds: shelvedOffloadTime }],
      parentClosePolicy: ParentClosePolicy.ABANDON,
    });
  }
  return instance;
}
