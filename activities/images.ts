// Activities on Glance run by the conductor: the snapshot image's record, checks and clean-up.
// The image data itself moves on the compute host (activities/compute.ts).
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
      const image = await glance.createImage(instance, {
        ...snapshotImageProperties(instance),
        id: imageId,
        name: shelvedImageName(instance),
        owner: instance.projectId,
        visibility: 'private',
        disk_format: 'qcow2',
        container_format: 'bare',
        min_ram: minRam,
        min_disk: minDisk,
      });
      log.info('snapshot image created', { instanceUuid: instance.uuid, imageId, status: image.status });
      return image;
    },

    /** The image an instance boots from; it must exist and be active. */
    async getActiveImage({ owner, imageId }: { owner: ImageOwner; imageId: string }): Promise<GlanceImage> {
      const image = await glance.getImage(owner, imageId);
      if (!image || image.status !== 'active') {
        throw ApplicationFailure.create({
          type: 'ImageNotFound',
          message: image ? `Image ${imageId} is ${image.status}, not active.` : `Image ${imageId} could not be found.`,
          nonRetryable: true,
        });
      }
      return image;
    },

    /** Deletes the image; an image already gone is fine. */
    async deleteImage({ owner, imageId }: { owner: ImageOwner; imageId: string }): Promise<void> {
      const deleted = await glance.deleteImage(owner, imageId);
      log.info(deleted ? 'image deleted' : 'image already gone', { imageId });
    },
  };
}

export type ImageActivities = ReturnType<typeof createImageActivities>;
