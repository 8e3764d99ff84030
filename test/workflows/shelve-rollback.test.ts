// The shelve workflow's failure path, with a stub compute host beside the real conductor,
// PostgreSQL and Glance: the subject is the workflow's roll-back, not the hypervisor.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../activities/database.js';
import { startAction } from '../../lib/actions.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

describe('a shelve that fails during the upload', () => {
  let stack: TestStack;
  let stub: StubHost;
  let instanceUuid: string;
  let uploadFails = true;

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack, {
      async snapshotInstance({ imageId }) {
        if (!uploadFails) return stub.snapshot(imageId);
        stub.snapshots.push(imageId);
        throw ApplicationFailure.nonRetryable('No space left on device', 'DiskFull');
      },
    });
    instanceUuid = (await stub.buildInstance()).uuid;
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  it('fails with the reason, deletes its half-made image and frees the instance', async () => {
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const error = await handle.result().catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause?.message).toBe('No space left on device');

    expect(stub.snapshots).toHaveLength(1);
    expect(await stack.glance.getImage(testOwner, stub.snapshots[0]!)).toBeNull();
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, host: stub.host });
    expect(instance.systemMetadata).not.toHaveProperty('shelved_image_id');
  });

  it('lets the next shelve claim the instance and finish', async () => {
    uploadFails = false;
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const instance = await handle.result();
    expect(instance).toMatchObject({ vmState: 'shelved', taskState: null, host: stub.host });
    expect(instance.systemMetadata.shelved_image_id).toBe(stub.snapshots[1]);
  });
});
