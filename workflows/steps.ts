// Steps more than one action takes: claiming the instance, recording its guest running, ending a
// shelve's offload timer, deleting a shelve's snapshot.
import { getExternalWorkflowHandle, log } from '@temporalio/workflow';
import type { ClaimRequest, SaveRequest } from '../lib/db/task-states.js';
import { type Instance, type PowerState, type TaskState, VmState } from '../lib/nova.js';
import { offloadTimerWorkflowId } from '../lib/temporal.js';
import { recordStep } from './action-log.js';
import { database, images } from './activities.js';
import { applicationFailureOf } from './failures.js';
import { settling } from './rollback.js';

/** Claims the instance for an action; a refusal fails the workflow with its own readable reason. */
export function claim(request: ClaimRequest): Promise<Instance> {
  return database.claimInstance(request).catch((error: unknown) => Promise.reject(applicationFailureOf(error)));
}

/**
 * Records the guest running: ACTIVE, no task. Once the guest runs the record goes as far forward as
 * it got, cancelled or not; a rollback would destroy a guest that works.
 */
export function saveActive(
  request: Pick<SaveRequest, 'instanceUuid' | 'requestId' | 'removeSystemMetadata'> & {
    expectedTaskState: TaskState;
    powerState: PowerState;
    /** A spawn sets launched_at; a power-on keeps it. */
    launched?: boolean;
  },
): Promise<Instance> {
  const { expectedTaskState, powerState, launched, ...save } = request;
  return settling(() =>
    database.saveInstance({
      ...save,
      expectedTaskStates: [expectedTaskState],
      changes: { vmState: VmState.ACTIVE, taskState: null, powerState, ...(launched ? { launched } : {}) },
    }),
  );
}

/**
 * Ends the offload timer a shelve started, when an action takes the shelved instance first: the
 * claim already keeps a stale timer from acting; this just ends it. It may have ended on its own.
 */
export async function cancelOffloadTimer(instanceUuid: string, imageId: string): Promise<void> {
  await getExternalWorkflowHandle(offloadTimerWorkflowId(instanceUuid, imageId))
    .cancel()
    .catch(() => undefined);
}

/**
 * Deletes the instance's shelve snapshot, as an event of the action. Best effort, as in Nova:
 * an unshelved instance must stay running, a deleted one gone, whatever Glance answers.
 */
export async function deleteSnapshotImage(requestId: string, instance: Instance, imageId: string): Promise<void> {
  await recordStep(
    { requestId, name: 'delete_snapshot_image', host: null, details: `deleting snapshot image ${imageId}` },
    () =>
      images
        .deleteSnapshotImage({ imageId })
        .catch((error: unknown) =>
          log.warn('snapshot image not deleted', { imageId, error: String(applicationFailureOf(error)) }),
        ),
  );
}
