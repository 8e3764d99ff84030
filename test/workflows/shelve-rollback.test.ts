// The shelve workflow's failure path, with a stub compute host beside the real conductor,
// PostgreSQL and Glance: the subject is the workflow's roll-back, not the hypervisor.
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeActivities } from '../../activities/compute.js';
import { getInstance, reportComputeNode } from '../../activities/database.js';
import { startAction } from '../../lib/actions.js';
import { PowerState } from '../../lib/nova.js';
import { computeTaskQueue } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const owner = { projectId: 'wf-project', userId: 'wf-user' };
const flavor = { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 };

describe('a shelve that fails during the upload', () => {
  let stack: TestStack;
  let stubWorker: Worker;
  let stubRunning: Promise<void>;
  const host = `stub-${randomUUID().slice(0, 8)}`;
  const instanceUuid = randomUUID();
  const uploadAttempts: string[] = [];
  let uploadFails = true;
  let bootImageId: string;

  const stubCompute: ComputeActivities = {
    async powerOffInstance() {
      return PowerState.SHUTDOWN;
    },
    async snapshotInstance({ imageId }) {
      uploadAttempts.push(imageId);
      if (uploadFails) throw ApplicationFailure.nonRetryable('No space left on device', 'DiskFull');
      return { size: 0 };
    },
    async destroyInstance() {},
    async spawnInstance() {
      return PowerState.RUNNING;
    },
    async powerOnInstance() {
      return PowerState.RUNNING;
    },
  };

  beforeAll(async () => {
    stack = await startTestStack();
    const connection = await NativeConnection.connect({ address: stack.config.temporal.address });
    stubWorker = await Worker.create({ connection, taskQueue: computeTaskQueue(host), activities: stubCompute });
    stubRunning = stubWorker.run().finally(() => connection.close());
    await reportComputeNode(stack.pool, {
      host,
      availabilityZone: 'nova',
      hypervisorType: 'stub',
      vcpus: 1,
      memoryMb: 1024,
    });
    // An empty boot image is enough: the stub host never reads it.
    bootImageId = randomUUID();
    await stack.glance.createImage(owner, {
      id: bootImageId,
      name: 'wf-boot',
      owner: owner.projectId,
      visibility: 'private',
      disk_format: 'qcow2',
      container_format: 'bare',
    });
    await stack.glance.uploadImageData(owner, bootImageId, Readable.from([]), 0);
    const build = await startAction(stack.client, stack.config, 'build', {
      instanceUuid,
      displayName: 'wf',
      ...owner,
      imageRef: bootImageId,
      flavor,
      host,
    });
    await build.result();
  });

  afterAll(async () => {
    stubWorker?.shutdown();
    await stubRunning;
    for (const imageId of [bootImageId, ...uploadAttempts]) if (imageId) await stack.glance.deleteImage(owner, imageId);
    // Gone, so that no later test's scheduler picks the stub host.
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = $1', [host]);
    await stack?.stop();
  });

  it('fails with the reason, deletes its half-made image and frees the instance', async () => {
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const error = await handle.result().catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause?.message).toBe('No space left on device');

    expect(uploadAttempts).toHaveLength(1);
    expect(await stack.glance.getImage(owner, uploadAttempts[0]!)).toBeNull();
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, host });
    expect(instance.systemMetadata).not.toHaveProperty('shelved_image_id');
  });

  it('lets the next shelve claim the instance and finish', async () => {
    uploadFails = false;
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const instance = await handle.result();
    expect(instance).toMatchObject({ vmState: 'shelved', taskState: null, host });
    expect(instance.systemMetadata.shelved_image_id).toBe(uploadAttempts[1]);
  });
});
