// An unshelve of an offloaded instance whose spawn fails, on fake conductor activities and a
// stub compute host: the instance goes back to SHELVED_OFFLOADED with its snapshot, for another try.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shelveInstance, unshelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import { type MockedTemporal, newHost, startMockedTemporal, stubCompute, withWorkers } from './environment.js';

describe('an unshelve of an offloaded instance', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  it('whose spawn fails: back to SHELVED_OFFLOADED on no host, the domain removed, the snapshot kept', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    const compute = stubCompute(fake, {
      async spawnInstance() {
        throw ApplicationFailure.nonRetryable('QEMU refused to start the domain', 'SpawnFailed');
      },
    });

    const { offloaded, error } = await withWorkers(temporal, fake, host, compute, async (taskQueue) => {
      const offloaded = await temporal.env.client.workflow.execute(shelveInstance, {
        taskQueue,
        workflowId: `shelve-${instanceUuid}`,
        args: [{ instanceUuid, shelvedOffloadTime: 0 }],
      });
      const error = await temporal.env.client.workflow
        .execute(unshelveInstance, { taskQueue, workflowId: `unshelve-${instanceUuid}`, args: [{ instanceUuid }] })
        .catch((failure: unknown) => failure);
      return { offloaded, error };
    });

    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', host: null });
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause).toMatchObject({
      type: 'SpawnFailed',
      message: 'QEMU refused to start the domain',
    });
    // The shelve's power-off, upload and offload, then the spawn and its undo.
    expect(compute.calls).toEqual([
      'powerOffInstance',
      'snapshotInstance',
      'destroyInstance',
      'spawnInstance',
      'destroyInstance',
    ]);
    const imageId = offloaded.systemMetadata.shelved_image_id!;
    expect(fake.images.get(imageId)).toMatchObject({ status: 'active' });
    const instance = fake.instance(instanceUuid);
    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null, node: null });
    expect(instance.systemMetadata.shelved_image_id).toBe(imageId);
    expect(fake.actions(instanceUuid).map(({ action, message }) => [action, message])).toEqual([
      ['shelve', null],
      ['unshelve', 'Error'],
    ]);
  });
});
