// Activities on Glance run by the conductor: the snapshot image's record, checks and clean-up.
// The image data itself moves on the compute host (activities/compute/).
//
// A shelve snapshot belongs to the service's own project (glance.snapshotContext), not to the
// instance's, and is protected: while it is the only copy of the disk, no tenant can upload into
// it or delete it (docs/security.md, The snapshot). Only these activities unprotect and delete it.
import { log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { GlanceClient, GlanceImage } from '../lib/glance.js';
import { type Instance, shelvedImageName, snapshotImageProperties } from '../lib/nova.js';

type ImageOwner = Pick<Instance, 'projectId' | 'userId'>;

export function createImageActivities(glance: GlanceClient) {
  return {
    /**
     * Creates the queued image a shelve uploads into, named `<instance name>-shelved` with the
     * properties Nova gives a snapshot. The id comes from the workflow, so a retry finds its own image.
     */
    async createSnapshotImage({ instance, imageId }: { instance: Instance; imageId: string }): Promise<GlanceImage> {
      const minRam = Number(instance.systemMetadata.image_min_ram ?? 0);
      const minDisk = Number(instance.systemMetadata.image_min_disk ?? instance.flavor.rootGb);
      const image = await glance.createImage(glance.snapshotContext, {
        ...snapshotImageProperties(instance),
        id: imageId,
        name: shelvedImageName(instance),
        // Its properties owner_id and instance_uuid say whose it is.
        owner: glance.snapshotContext.projectId,
        protected: true,
        visibility: 'private',
        disk_format: 'qcow2',
        container_format: 'bare',
        min_ram: minRam,
        min_disk: minDisk,
      });
      log.info('snapshot image created', { instanceUuid: instance.uuid, imageId, status: image.status });
      return image;
    },

    /**
     * An image that must exist and be active: the one an instance boots from, as its owner sees it,
     * or (no owner) a shelve snapshot in the service's project.
     */
    async getActiveImage({ owner, imageId }: { owner?: ImageOwner; imageId: string }): Promise<GlanceImage> {
      const image = await glance.getImage(owner ?? glance.snapshotContext, imageId);
      if (!image || image.status !== 'active') {
        throw ApplicationFailure.create({
          type: 'ImageNotFound',
          message: image ? `Image ${imageId} is ${image.status}, not active.` : `Image ${imageId} could not be found.`,
          nonRetryable: true,
        });
      }
      return image;
    },

    /**
     * Refuses an offload unless the snapshot is still in Glance, active, with the hash the shelve
     * recorded: the offload removes the only other copy of the disk.
     */
    async verifySnapshotImage({ instance }: { instance: Instance }): Promise<void> {
      const { shelved_image_id: imageId, shelved_image_os_hash_value: recorded } = instance.systemMetadata;
      const refuse = (why: string): never => {
        throw ApplicationFailure.create({
          type: 'SnapshotUnverified',
          message: `Instance ${instance.uuid} keeps its disk on its host: ${why}`,
          nonRetryable: true,
        });
      };
      if (!imageId) return refuse('it has no shelved_image_id');
      if (!recorded) return refuse(`no hash was recorded for its snapshot image ${imageId}`);
      const image = await glance.getImage(glance.snapshotContext, imageId);
      if (!image) return refuse(`its snapshot image ${imageId} is gone from Glance`);
      if (image.status !== 'active') return refuse(`its snapshot image ${imageId} is ${image.status}`);
      if (image.os_hash_value !== recorded)
        return refuse(`its snapshot image ${imageId} no longer holds what the shelve stored`);
    },

    /** Deletes a shelve snapshot, protected as it is; an image already gone is fine. */
    async deleteSnapshotImage({ imageId }: { imageId: string }): Promise<void> {
      const deleted = await glance.unprotectAndDelete(glance.snapshotContext, imageId);
      log.info(deleted ? 'snapshot image deleted' : 'snapshot image already gone', { imageId });
    },
  };
}

export type ImageActivities = ReturnType<typeof createImageActivities>;
