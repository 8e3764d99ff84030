// Unshelve failures leave an instance the user can act on (docs/nova-behaviour.md §5.5, and better than Nova's
// ERROR for a missing image), on a stub compute host beside the real conductor and Glance.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

describe('a failed unshelve of an offloaded instance', () => {
  let stack: TestStack;
  let stub: StubHost;
  let spawnFails = false;
  const destroyed: string[] = [];

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack, {
      async spawnInstance() {
        if (spawnFails) throw ApplicationFailure.nonRetryable('QEMU refused to start the domain', 'SpawnFailed');
        return 1;
      },
      async destroyInstance({ instanceUuid }) {
        destroyed.push(instanceUuid);
      },
    });
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  async function offloadedInstance(): Promise<Instance> {
    const { uuid } = await stub.buildInstance();
    const handle = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid: uuid,
      shelvedOffloadTime: 0,
    });
    return (await handle.result()) as Instance;
  }

  async function unshelveFailure(instanceUuid: string): Promise<ApplicationFailure> {
    const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid, host: stub.host });
    const error = await handle.result().catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    return (error as WorkflowFailedError).cause as ApplicationFailure;
  }

  it('when the spawn fails: back to SHELVED_OFFLOADED with no host, the domain removed, the image kept', async () => {
    const offloaded = await offloadedInstance();
    const imageId = offloaded.systemMetadata.shelved_image_id!;
    spawnFails = true;
    try {
      const failure = await unshelveFailure(offloaded.uuid);
      expect(failure.message).toBe('QEMU refused to start the domain');
    } finally {
      spawnFails = false;
    }
    const instance = await getInstance(stack.pool, offloaded.uuid);
    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null, node: null });
    expect(instance.systemMetadata.shelved_image_id).toBe(imageId);
    expect(destroyed).toContain(offloaded.uuid);
    expect(await stack.glance.getImage(testOwner, imageId)).not.toBeNull();

    // The user can act on it: the next unshelve works, and only then is the image deleted.
    const handle = await startAction(stack.client, stack.config, 'unshelve', {
      instanceUuid: offloaded.uuid,
      host: stub.host,
    });
    expect(await handle.result()).toMatchObject({ vmState: 'active', taskState: null, host: stub.host });
    expect(await stack.glance.getImage(testOwner, imageId)).toBeNull();
  });

  it('when the image was deleted behind its back: a clear error, still SHELVED_OFFLOADED (Nova: ERROR), still deletable', async () => {
    const offloaded = await offloadedInstance();
    const imageId = offloaded.systemMetadata.shelved_image_id!;
    await stack.glance.unprotectAndDelete(stack.glance.snapshotContext, imageId);

    const failure = await unshelveFailure(offloaded.uuid);
    expect(failure).toMatchObject({ type: 'ImageNotFound', nonRetryable: true });
    expect(failure.message).toBe(`Image ${imageId} could not be found.`);
    expect(await getInstance(stack.pool, offloaded.uuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
    });

    await (await startAction(stack.client, stack.config, 'delete', { instanceUuid: offloaded.uuid })).result();
    await expect(getInstance(stack.pool, offloaded.uuid)).rejects.toMatchObject({ type: 'InstanceNotFound' });
  });

  it('when the named host is unknown: refused before anything moves', async () => {
    const offloaded = await offloadedInstance();
    const handle = await startAction(stack.client, stack.config, 'unshelve', {
      instanceUuid: offloaded.uuid,
      host: 'no-such-host',
    });
    const error = (await handle.result().catch((failure: unknown) => failure)) as WorkflowFailedError;
    expect(error.cause).toMatchObject({
      type: 'ComputeHostNotFound',
      message: 'Compute host no-such-host could not be found.',
    });
    expect(await getInstance(stack.pool, offloaded.uuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
    });
  });
});
