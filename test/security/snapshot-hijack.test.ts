// The instance's owner goes at its shelve snapshot straight through Glance, as any project member
// may: uploading into it or deleting it while the shelve runs and while it is SHELVED. None of it
// works, and when the snapshot goes anyway (an admin deletes it), the offload refuses to remove
// the disk: no byte of the instance is lost. A snapshot found active is taken only with the hash
// this shelve's own upload recorded.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { createComputeActivities } from '../../activities/compute/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { failureMessages } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe("the owner going at the instance's shelve snapshot", () => {
  let stack: TestStack;
  let vm: KnownVm;

  /** A request to Glance as a plain member of the instance's project. */
  function asOwner(method: 'PUT' | 'DELETE', path: string, body?: Buffer): Promise<Response> {
    return fetch(`${stack.config.glance.url}/v2${path}`, {
      method,
      headers: {
        'X-Identity-Status': 'Confirmed',
        'X-Roles': 'member',
        'X-Tenant-Id': e2eOwner.projectId,
        'X-User-Id': e2eOwner.userId,
        ...(body ? { 'Content-Type': 'application/octet-stream' } : {}),
      },
      ...(body ? { body } : {}),
    });
  }

  /** Both attacks, each refused; returns their statuses. */
  async function attack(imageId: string): Promise<number[]> {
    const upload = await asOwner('PUT', `/images/${imageId}/file`, randomBytes(64 * 1024));
    const remove = await asOwner('DELETE', `/images/${imageId}`);
    return [upload.status, remove.status];
  }

  /** Unshelves the SHELVED VM in place, from its disk: each case leaves the VM ACTIVE, as it found it. */
  async function unshelveInPlace(): Promise<void> {
    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    expect((await unshelve.result()) as Instance, 'the unshelve in place').toMatchObject({ vmState: 'active' });
    expect(await vm.diskIsIntact(stack.config), 'the disk after the unshelve').toBe(true);
  }

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host);
  }, 300_000);

  afterAll(async () => {
    await vm?.remove();
    await stack?.stop();
  });

  it('cannot upload into it or delete it while the shelve runs, nor once SHELVED', async () => {
    const handle = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid: vm.instanceUuid,
      shutdownTimeout: 0,
      shelvedOffloadTime: -1,
    });
    const name = `${vm.displayName}-shelved`;
    let duringShelve: number[] | null = null;
    let finished = false;
    const result = handle.result().finally(() => (finished = true));
    while (!finished && !duringShelve) {
      const [image] = await stack.glance.listImages(e2eOwner, { name });
      if (image && image.status !== 'active') duringShelve = await attack(image.id);
      else await sleep(20);
    }
    const shelved = (await result) as Instance;
    expect(shelved).toMatchObject({ vmState: 'shelved', taskState: null });
    expect(duringShelve, 'the snapshot was seen before it was active').not.toBeNull();
    for (const status of duringShelve!) expect(status).toBeGreaterThanOrEqual(400);

    const imageId = shelved.systemMetadata.shelved_image_id!;
    for (const status of await attack(imageId)) expect(status).toBeGreaterThanOrEqual(400);
    const image = await stack.glance.getImage(e2eOwner, imageId);
    expect(image).toMatchObject({
      status: 'active',
      protected: true,
      os_hash_value: shelved.systemMetadata.shelved_image_os_hash_value,
    });
    expect(image?.owner).not.toBe(e2eOwner.projectId);
    await unshelveInPlace();
  });

  it('gone anyway (an admin deleted it): the offload refuses, the instance stays SHELVED with its disk', async () => {
    const shelve = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid: vm.instanceUuid,
      shutdownTimeout: 0,
      shelvedOffloadTime: -1,
    });
    const { shelved_image_id: imageId } = ((await shelve.result()) as Instance).systemMetadata;
    const admin = { projectId: 'admin-project', userId: 'admin' };
    expect(await stack.glance.setProtected(admin, imageId!, false)).toBe(true);
    expect(await stack.glance.deleteImage(admin, imageId!)).toBe(true);

    const offload = await startAction(stack.client, stack.config, 'shelveOffload', {
      instanceUuid: vm.instanceUuid,
      ...admin,
    });
    const failure = await offload.result().then(
      () => null,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(WorkflowFailedError);
    expect(failureMessages(failure)).toContain(
      `Instance ${vm.instanceUuid} keeps its disk on its host: its snapshot image ${imageId} is gone from Glance`,
    );
    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({
      vmState: 'shelved',
      taskState: null,
      host: stack.config.compute.host,
    });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);

    // Unshelved in place, it runs again from that disk.
    await unshelveInPlace();
  });

  it('takes a snapshot it finds active only with the hash its own upload recorded', async () => {
    const instance = await getInstance(stack.pool, vm.instanceUuid);
    const imageId = randomUUID();
    const context = stack.glance.snapshotContext;
    await stack.glance.createImage(context, {
      id: imageId,
      name: 'hijacked',
      owner: context.projectId,
      visibility: 'private',
      disk_format: 'qcow2',
      container_format: 'bare',
    });
    const planted = randomBytes(4096);
    await stack.glance.uploadImageData(context, imageId, Readable.from([planted]), planted.length);
    const compute = createComputeActivities(stack.config.compute, stack.libvirt, stack.glance);
    try {
      // A retry with no record of an upload: the image's bytes are not this shelve's.
      const refused = await new MockActivityEnvironment()
        .run(compute.snapshotInstance, { instance, imageId })
        .catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(ApplicationFailure);
      expect(refused).toMatchObject({ type: 'ImageUploadMismatch', nonRetryable: true });

      // A retry after its own upload, whose heartbeat kept the hash of what it sent.
      const uploaded = {
        size: planted.length,
        osHashAlgo: 'sha512',
        osHashValue: createHash('sha512').update(planted).digest('hex'),
      };
      const heartbeatDetails = { step: 'upload', uploaded };
      expect(
        await new MockActivityEnvironment({ heartbeatDetails }).run(compute.snapshotInstance, { instance, imageId }),
      ).toEqual(uploaded);
    } finally {
      await stack.glance.deleteImage(context, imageId);
    }
  });
});
