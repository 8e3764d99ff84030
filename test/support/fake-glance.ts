// An in-memory Glance for workflow tests without the stack: the image activities the conductor
// runs, and what a compute host's upload does to a queued snapshot.
import { ApplicationFailure } from '@temporalio/common';
import type { ImageActivities } from '../../activities/images.js';
import type { GlanceImage } from '../../lib/glance.js';
import { shelvedImageName } from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';

/** A refusal of the type the workflows branch on, as the real activities fail. */
export const failure = (type: string, message: string) =>
  ApplicationFailure.create({ type, message, nonRetryable: true });

export interface FakeGlance {
  activities: ImageActivities;
  /** Snapshot images, by id. */
  images: Map<string, GlanceImage>;
  /** What a compute host's snapshotInstance does: fills the queued image with a few bytes. */
  upload(imageId: string): UploadedSnapshot;
}

export function createFakeGlance(): FakeGlance {
  const images = new Map<string, GlanceImage>();
  const activities: ImageActivities = {
    async createSnapshotImage({ instance, imageId }) {
      const image: GlanceImage = images.get(imageId) ?? {
        id: imageId,
        name: shelvedImageName(instance),
        status: 'queued',
        owner: 'service',
        visibility: 'private',
        disk_format: 'qcow2',
        container_format: 'bare',
        size: null,
        virtual_size: null,
        checksum: null,
        os_hash_algo: null,
        os_hash_value: null,
      };
      images.set(imageId, image);
      return { ...image };
    },

    async getActiveImage({ imageId }) {
      const image = images.get(imageId);
      if (image?.status !== 'active') throw failure('ImageNotFound', `Image ${imageId} could not be found.`);
      return { ...image };
    },

    async verifySnapshotImage({ instance }) {
      const { shelved_image_id: imageId, shelved_image_os_hash_value: recorded } = instance.systemMetadata;
      const image = imageId === undefined ? undefined : images.get(imageId);
      if (image?.status !== 'active' || image.os_hash_value !== recorded) {
        throw failure('SnapshotUnverified', `Instance ${instance.uuid} keeps its disk on its host`);
      }
    },

    async deleteSnapshotImage({ imageId }) {
      images.delete(imageId);
    },
  };

  return {
    activities,
    images,
    upload(imageId) {
      const image = images.get(imageId);
      if (!image) throw failure('ImageNotFound', `Image ${imageId} could not be found.`);
      const osHashValue = `hash-of-${imageId}`;
      Object.assign(image, { status: 'active', size: 13, os_hash_algo: 'sha512', os_hash_value: osHashValue });
      return { size: 13, osHashAlgo: 'sha512', osHashValue };
    },
  };
}
