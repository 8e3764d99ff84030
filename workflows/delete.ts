// Delete: the server goes, with its domain and files on its host and its shelve snapshot in
// Glance; its volumes stay. A shelved or offloaded server is deleted as any other, whatever
// became of its snapshot (spec §6: delete always works on a shelved server).
import { configuredComputeHosts, database } from './activities.js';
import {
  type ActionInput,
  cancelOffloadTimer,
  checkedInput,
  claim,
  deleteSnapshotImage,
  inAction,
  inEvent,
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
  const release = () => database.releaseInstance({ instanceUuid, requestId });

  await inAction(
    requestId,
    async () => {
      if (imageId) await cancelOffloadTimer(instanceUuid, imageId);
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
      if (imageId) await deleteSnapshotImage(requestId, instance, imageId);
      await database.markInstanceDeleted({ instanceUuid, requestId });
    },
    release,
  );
}
