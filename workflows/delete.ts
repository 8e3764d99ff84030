// Delete: the server goes, with its domain and files on its host and its shelve snapshot in
// Glance; its volumes stay. A shelved or offloaded server is deleted as any other, whatever
// became of its snapshot (docs/nova-behaviour.md §6: delete always works on a shelved server). On a host that is
// down the server is deleted from the database alone (Nova's local delete), and the host removes
// its domain and files when its worker starts again (workers/compute.ts claimHost).
import { log } from '@temporalio/workflow';
import { recordAction, recordStep } from './action-log.js';
import { configuredComputeHosts, database } from './activities.js';
import { type ActionInput, checkedInput, tagWorkflow } from './input.js';
import { settling, withRollback } from './rollback.js';
import { cancelOffloadTimer, claim, deleteSnapshotImage } from './steps.js';

export async function deleteInstance(rawInput: ActionInput): Promise<void> {
  const { instanceUuid, requestId, userId, projectId } = checkedInput('deleteInstance', rawInput);
  tagWorkflow({ instanceUuid, action: 'delete' });
  const instance = await claim({ instanceUuid, action: 'delete', requestId, userId, projectId });
  const { host } = instance;
  tagWorkflow({ host });
  const imageId = instance.systemMetadata.shelved_image_id;
  const release = () => database.releaseInstance({ instanceUuid, requestId });

  await recordAction(
    requestId,
    async () => {
      if (imageId) await cancelOffloadTimer(instanceUuid, imageId);
      const localDelete = host !== null && (await terminateOnHost(instanceUuid, requestId, host));
      // Its host holds nothing of it any more (or, after a local delete, will not once its worker
      // starts): the delete ends, cancelled or not.
      await settling(async () => {
        if (imageId) await deleteSnapshotImage(requestId, instance, imageId);
        await database.markInstanceDeleted({ instanceUuid, requestId, localDelete });
      });
    },
    release,
  );
}

/**
 * Removes the instance's domain and files from its host. A host that is down now (forced down, or
 * silent past the service-down window) is not waited for: the delete goes on in the database
 * alone and the host cleans up when its worker starts again. A host that is up but does not take
 * the step within COMPUTE_HOST_TIMEOUT leaves the server as it was, released, for a later delete.
 * True for a local delete.
 */
async function terminateOnHost(instanceUuid: string, requestId: string, host: string): Promise<boolean> {
  const down = await database.computeHostDown({ host });
  if (down) {
    await recordStep({ requestId, name: 'local_delete', host, details: `local delete: ${down}` }, async () =>
      log.info('local delete: the host is down', { instanceUuid, host, reason: down }),
    );
    return true;
  }
  const compute = await configuredComputeHosts();
  await withRollback(
    () =>
      recordStep(
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
  return false;
}
