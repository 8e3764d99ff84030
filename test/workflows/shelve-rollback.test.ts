// The shelve workflow's failure path, with a stub compute host beside the real conductor,
// PostgreSQL and Glance: the subject is the workflow's roll-back, not the hypervisor.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../activities/action-log.js';
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

  it('records the failed step in the actions log, with its traceback', async () => {
    const [shelve, create] = await listInstanceActions(stack.pool, instanceUuid);
    expect(create).toMatchObject({ action: 'create', message: null });
    expect(shelve).toMatchObject({ action: 'shelve', message: 'Error', userId: testOwner.userId });
    expect(shelve!.finishTime).not.toBeNull();
    expect(shelve!.events.map(({ event, result }) => [event, result])).toEqual([
      ['compute_power_off_instance', 'Success'],
      ['create_snapshot_image', 'Success'],
      ['compute_snapshot_instance', 'Error'],
    ]);
    expect(shelve!.events[2]!.host).toBe(stub.host);
    expect(shelve!.events[2]!.traceback).toContain('ApplicationFailure: No space left on device');
  });

  it('lets the next shelve claim the instance and finish', async () => {
    uploadFails = false;
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const instance = await handle.result();
    expect(instance).toMatchObject({ vmState: 'shelved', taskState: null, host: stub.host });
    expect(instance.systemMetadata.shelved_image_id).toBe(stub.snapshots[1]);
  });
});
