// The shelve workflow's roll-back, on fake conductor activities and a stub compute host: a failed
// upload and a cancel during the upload each leave the instance as the shelve found it.
import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PowerState } from '../../lib/nova.js';
import { shelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import {
  type MockedTemporal,
  newHost,
  startMockedTemporal,
  stubCompute,
  testIdentity,
  withWorkers,
} from './environment.js';

describe('a shelve that does not finish', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  it('when the upload fails: the image deleted, the guest powered on again, the instance free, the action Error', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    const compute = stubCompute(fake, {
      async snapshotInstance() {
        throw ApplicationFailure.nonRetryable('No space left on device', 'DiskFull');
      },
    });

    const error = await withWorkers(temporal, fake, host, compute, (taskQueue) =>
      temporal.env.client.workflow
        .execute(shelveInstance, {
          taskQueue,
          workflowId: `shelve-${instanceUuid}`,
          args: [{ instanceUuid, shelvedOffloadTime: -1 }],
        })
        .catch((failure: unknown) => failure),
    );

    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause).toMatchObject({
      type: 'DiskFull',
      message: 'No space left on device',
    });
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'powerOnInstance']);
    expect(fake.images.size).toBe(0);
    const instance = fake.instance(instanceUuid);
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, powerState: PowerState.RUNNING, host });
    expect(instance.systemMetadata).not.toHaveProperty('shelved_image_id');
    const [shelve] = fake.actions(instanceUuid);
    expect(shelve).toMatchObject({ action: 'shelve', message: 'Error' });
    expect(shelve!.events.map(({ event, result }) => [event, result])).toEqual([
      ['compute_power_off_instance', 'Success'],
      ['create_snapshot_image', 'Success'],
      ['compute_snapshot_instance', 'Error'],
    ]);
    expect(shelve!.events[2]!.traceback).toContain('ApplicationFailure: No space left on device');
  });

  it('when cancelled while its upload runs: the upload stopped, then the same roll-back, the action Cancelled', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    let uploadStarted!: () => void;
    const uploading = new Promise<void>((resolve) => (uploadStarted = resolve));
    const compute = stubCompute(fake, {
      // An upload that ends only when the cancel reaches it, through its heartbeat.
      async snapshotInstance() {
        uploadStarted();
        for (;;) {
          Context.current().heartbeat();
          await Context.current().sleep(100);
        }
      },
    });

    const error = await withWorkers(temporal, fake, host, compute, async (taskQueue) => {
      const handle = await temporal.env.client.workflow.start(shelveInstance, {
        taskQueue,
        workflowId: `shelve-${instanceUuid}`,
        args: [{ instanceUuid, shelvedOffloadTime: -1 }],
      });
      await uploading;
      await handle.cancel();
      return handle.result().catch((failure: unknown) => failure);
    });

    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'powerOnInstance']);
    expect(fake.images.size).toBe(0);
    expect(fake.instance(instanceUuid)).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: PowerState.RUNNING,
      host,
    });
    const [shelve] = fake.actions(instanceUuid);
    expect(shelve).toMatchObject({ action: 'shelve', message: 'Cancelled', reason: `cancelled by ${testIdentity}` });
    expect(shelve!.events.at(-1)).toMatchObject({ event: 'compute_snapshot_instance', result: 'Error' });
  });
});
