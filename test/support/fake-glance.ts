// An in-memory Glance for workflow tests without the stack: the image activities the conductor
// runs, and what a compute host's upload does to a queued snapshot.
import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import type { ImageActivities } from '../../activities/images.js';
import type { GlanceImage } from '../../lib/glance.js';
import { shelvedImageName, snapshotImageProperties } from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';

/** The project shelve snapshots belong to: the service's own (activities/images.ts). */
export const SNAPSHOT_PROJECT = 'service';

/** A refusal of the type the workflows branch on, as the real activities fail. */
export const failure = (type: string, message: string) =>
  ApplicationFailure.create({ type, message, nonRetryable: true });

export interface FakeGlance {
  activities: ImageActivities;
  /** Images, by id: snapshots, and those addImage recorded. */
  images: Map<string, GlanceImage>;
  /** Records an active image of `projectId`'s, as one a build boots from; returns its id. */
  addImage(projectId: string): string;
  /** What a compute host's snapshotInstance does: fills the queued image with a few bytes. */
  upload(imageId: string): UploadedSnapshot;
}

export function createFakeGlance(): FakeGlance {
  const images = new Map<string, GlanceImage>();
  const activities: ImageActivities = {
    async createSnapshotImage({ instance, imageId }) {
      const image: GlanceImage = images.get(imageId) ?? {
        ...snapshotImageProperties(instance),
        id: imageId,
        name: shelvedImageName(instance),
        status: 'queued',
        owner: SNAPSHOT_PROJECT,
        protected: true,
        visibility: 'private',
        disk_format: 'qcow2',
        container_format: 'bare',
        size: null,
        virtual_size: null,
        checksum: null,
        os_hash_algo: null,
        os_hash_value: null,
        created_at: new Date().toISOString(),
      };
      images.set(imageId, image);
      return { ...image };
    },

    async getActiveImage({ owner, imageId }) {
      // As Glance shows it to the owner's project, or (no owner) to the service's own.
      const image = images.get(imageId);
      const visible = image?.owner === (owner?.projectId ?? SNAPSHOT_PROJECT) || image?.visibility === 'public';
      if (!visible || image?.status !== 'active')
        throw failure('ImageNotFound', `Image ${imageId} could not be found.`);
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
    addImage(projectId) {
      const id = randomUUID();
      images.set(id, {
        id,
        name: 'cirros',
        status: 'active',
        owner: projectId,
        visibility: 'private',
        disk_format: 'qcow2',
        container_format: 'bare',
        size: 13,
        virtual_size: 1024 ** 3,
        checksum: null,
        os_hash_algo: 'sha512',
        os_hash_value: `hash-of-${id}`,
        min_ram: 0,
        min_disk: 1,
        created_at: new Date().toISOString(),
      });
      return id;
    },
    upload(imageId) {
      const image = images.get(imageId);
      if (!image) throw failure('ImageNotFound', `Image ${imageId} could not be found.`);
      const osHashValue = `hash-of-${imageId}`;
      Object.assign(image, { status: 'active', size: 13, os_hash_algo: 'sha512', os_hash_value: osHashValue });
      return { size: 13, osHashAlgo: 'sha512', osHashValue };
    },
  };
}
