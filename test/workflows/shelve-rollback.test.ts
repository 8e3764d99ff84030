// The shelve workflow's failure path, with a stub compute host beside the real conductor,
// PostgreSQL and Glance: the subject is the workflow's roll-back, not the hypervisor.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

describe('a shelve that fails during the upload', () => {
  let stack: TestStack;
  let stub: StubHost;
  /** The instances whose uploads fail, and the images each shelve of an instance was given. */
  const failing = new Set<string>();
  const images = new Map<string, string[]>();

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack, {
      async snapshotInstance({ instance, imageId }) {
        images.set(instance.uuid, [...(images.get(instance.uuid) ?? []), imageId]);
        if (!failing.has(instance.uuid)) return stub.snapshot(imageId);
        stub.snapshots.push(imageId);
        throw ApplicationFailure.nonRetryable('No space left on device', 'DiskFull');
      },
    });
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  /** An instance of the test's own, and a shelve of it that fails in its upload. */
  async function failedShelve(): Promise<{ instanceUuid: string; error: unknown }> {
    const instanceUuid = (await stub.buildInstance()).uuid;
    failing.add(instanceUuid);
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    return { instanceUuid, error: await handle.result().catch((failure: unknown) => failure) };
  }

  it('fails with the reason, deletes its half-made image and frees the instance', async () => {
    const { instanceUuid, error } = await failedShelve();
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause?.message).toBe('No space left on device');

    const made = images.get(instanceUuid)!;
    expect(made).toHaveLength(1);
    expect(await stack.glance.getImage(testOwner, made[0]!)).toBeNull();
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, host: stub.host });
    expect(instance.systemMetadata).not.toHaveProperty('shelved_image_id');
  });

  it('records the failed step in the actions log, with its traceback', async () => {
    const { instanceUuid } = await failedShelve();
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
    const { instanceUuid } = await failedShelve();
    failing.delete(instanceUuid);
    const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const instance = await handle.result();
    expect(instance).toMatchObject({ vmState: 'shelved', taskState: null, host: stub.host });
    expect(instance.systemMetadata.shelved_image_id).toBe(images.get(instanceUuid)![1]);
  });
});
