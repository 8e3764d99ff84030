// The reconciler on fake conductor activities and a stub compute host: what a terminated shelve
// left (its claim, its half-uploaded snapshot) and a guest that powered itself off are settled.
// Besides its own checks, it gives scripts/record-histories the reconciler's history.
import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { TerminatedFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PowerState } from '../../lib/nova.js';
import { reconcileInstances, shelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import { type MockedTemporal, newHost, startMockedTemporal, stubCompute, withWorkers } from './environment.js';

describe('the reconciler', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  it('releases the claim of a terminated shelve, deletes its snapshot and syncs a power state libvirt contradicts', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const shelved = fake.addInstance(host);
    // Recorded running; its guest powered itself off since.
    const stopped = fake.addInstance(host);
    let uploadStarted!: () => void;
    const uploading = new Promise<void>((resolve) => (uploadStarted = resolve));
    const compute = stubCompute(fake, {
      // An upload that ends only when its heartbeat hears the workflow is gone.
      async snapshotInstance() {
        uploadStarted();
        for (;;) {
          Context.current().heartbeat();
          await Context.current().sleep(100);
        }
      },
      async listInstancePowerStates() {
        return { [shelved]: PowerState.SHUTDOWN, [stopped]: PowerState.SHUTDOWN };
      },
    });

    const { terminated, summary } = await withWorkers(temporal, fake, host, compute, async (taskQueue) => {
      const shelve = await temporal.env.client.workflow.start(shelveInstance, {
        taskQueue,
        workflowId: `shelve-${shelved}`,
        args: [{ instanceUuid: shelved, shelvedOffloadTime: -1 }],
      });
      await uploading;
      await shelve.terminate('an operator gave up on it');
      const terminated = await shelve.result().catch((failure: unknown) => failure);
      const summary = await temporal.env.client.workflow.execute(reconcileInstances, {
        taskQueue,
        workflowId: `reconcile-${shelved}`,
        args: [{ graceSeconds: 0, instanceUuids: [shelved, stopped] }],
      });
      return { terminated, summary };
    });

    expect(terminated).toBeInstanceOf(WorkflowFailedError);
    expect((terminated as WorkflowFailedError).cause).toBeInstanceOf(TerminatedFailure);
    expect(summary).toEqual({ claimsReleased: 1, powerStatesSynced: 1, imagesDeleted: 1, failures: 0 });
    // As the shelve's rollback would have left it, with the power state libvirt shows.
    expect(fake.instance(shelved)).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: PowerState.SHUTDOWN,
      host,
    });
    expect(fake.instance(stopped)).toMatchObject({ vmState: 'active', powerState: PowerState.SHUTDOWN });
    expect(fake.images.size).toBe(0);
    // The claim's host, then every up host's power states.
    expect(compute.calls).toEqual([
      'powerOffInstance',
      'snapshotInstance',
      'listInstancePowerStates',
      'listInstancePowerStates',
    ]);
    const [shelve] = fake.actions(shelved);
    expect(shelve).toMatchObject({
      action: 'shelve',
      message: 'Error',
      reason: `released by the reconciler: workflow shelve-${shelved} was TERMINATED`,
    });
    expect(shelve!.events.at(-1)).toMatchObject({ event: 'compute_snapshot_instance', result: 'Error' });
  });
});
