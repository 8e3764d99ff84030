// Delete: the server goes, with its domain and files on its host and its shelve snapshot in
// Glance; its volumes stay. A shelved or offloaded server is deleted as any other, whatever
// became of its snapshot (spec §6: delete always works on a shelved server).
import { getExternalWorkflowHandle, log } from '@temporalio/workflow';
import { offloadTimerWorkflowId } from '../lib/temporal.js';
import { configuredComputeHosts, database, images } from './activities.js';
import {
  type ActionInput,
  checkedInput,
  claim,
  inAction,
  inEvent,
  reason,
  tagWorkflow,
  withRollback,
} from './common.js';

export async function deleteInstance(rawInput: ActionInput): Promise<void> {
  const { instanceUuid, requestId, userId, projectId } = checkedInput('deleteInstance', rawInput);
  tagWorkflow({ instanceUuid, action: 'delete' });
  const instance = await claim({ instanceUuid, action: 'delete', requestId, userId, projectId });
  const { host } = instance;
  tagWorkflow({ host });
  const imageId = instance.systemMetadata.shelved_image_id;

  await inAction(requestId, async () => {
    if (imageId) {
      // A pending offload timer has nothing left to offload; it may have ended on its own.
      await getExternalWorkflowHandle(offloadTimerWorkflowId(instanceUuid, imageId))
        .cancel()
        .catch(() => undefined);
    }
    if (host) {
      const compute = await configuredComputeHosts();
      // A host that cannot take the step (its worker down past COMPUTE_HOST_TIMEOUT) leaves the
      // server as it was, released, for a later delete.
      await withRollback(
        () =>
          inEvent(
            {
              requestId,
              name: 'compute_terminate_instance',
              host,
              details: `undefining the domain and removing the instance files on ${host}`,
            },
            () => compute(host).destroyInstance({ instanceUuid }),
          ),
        () => database.releaseInstance({ instanceUuid, requestId }),
      );
    }
    if (imageId) {
      await inEvent(
        { requestId, name: 'delete_snapshot_image', host: null, details: `deleting snapshot image ${imageId}` },
        // Best effort, as in Nova: an image already gone, or one Glance will not delete, does not
        // keep the server alive.
        () =>
          images
            .deleteImage({ owner: instance, imageId })
            .catch((error: unknown) =>
              log.warn('snapshot image not deleted', { imageId, error: String(reason(error)) }),
            ),
      );
    }
    await database.markInstanceDeleted({ instanceUuid, requestId });
  });
}
