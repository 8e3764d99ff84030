// The actions' main paths, on fake conductor activities and a stub compute host: a shelve that
// offloads at once and its unshelve, a shelve whose offload timer an unshelve or a delete ends, an
// offload timer that tries again, an offload asked for.
// Besides their own checks, they give scripts/record-histories the histories of these paths.
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeActivities } from '../../activities/compute/index.js';
import { PowerState } from '../../lib/nova.js';
import { offloadTimerWorkflowId } from '../../lib/temporal.js';
import { deleteInstance, shelveInstance, shelveOffloadInstance, unshelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import { type MockedTemporal, newHost, startMockedTemporal, stubCompute, withWorkers } from './environment.js';

describe('an instance shelved and then', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  /** An instance on a host of its own, and the workers that act on it. */
  function setUp(overrides: (instanceUuid: string) => Partial<ComputeActivities> = () => ({})) {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    const compute = stubCompute(fake, overrides(instanceUuid));
    const shelve = (taskQueue: string, shelvedOffloadTime: number) =>
      temporal.env.client.workflow.execute(shelveInstance, {
        taskQueue,
        workflowId: `shelve-${instanceUuid}`,
        args: [{ instanceUuid, shelvedOffloadTime }],
      });
    const run = <T>(body: (taskQueue: string) => Promise<T>) => withWorkers(temporal, fake, host, compute, body);
    return { host, fake, instanceUuid, compute, shelve, run };
  }

  it('offloaded at once, unshelved: spawned from its snapshot on a host, ACTIVE, the snapshot deleted', async () => {
    const { host, fake, instanceUuid, compute, shelve, run } = setUp();

    const { offloaded, unshelved } = await run(async (taskQueue) => {
      const offloaded = await shelve(taskQueue, 0);
      const unshelved = await temporal.env.client.workflow.execute(unshelveInstance, {
        taskQueue,
        workflowId: `unshelve-${instanceUuid}`,
        args: [{ instanceUuid }],
      });
      return { offloaded, unshelved };
    });

    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(unshelved).toMatchObject({ vmState: 'active', taskState: null, host });
    expect(unshelved.systemMetadata).not.toHaveProperty('shelved_image_id');
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'destroyInstance', 'spawnInstance']);
    expect(fake.images.size).toBe(0);
    expect(fake.actions(instanceUuid).map(({ action, message }) => [action, message])).toEqual([
      ['shelve', null],
      ['unshelve', null],
    ]);
  });

  it('unshelved while its offload timer waits: powered on in place, the timer cancelled', async () => {
    const { host, fake, instanceUuid, compute, shelve, run } = setUp();

    const { unshelved, timer } = await run(async (taskQueue) => {
      const shelved = await shelve(taskQueue, 3600);
      const unshelved = await temporal.env.client.workflow.execute(unshelveInstance, {
        taskQueue,
        workflowId: `unshelve-${instanceUuid}`,
        args: [{ instanceUuid }],
      });
      const timer = temporal.env.client.workflow.getHandle(
        offloadTimerWorkflowId(instanceUuid, shelved.systemMetadata.shelved_image_id!),
      );
      await timer.result().catch(() => undefined);
      return { unshelved, timer: await timer.describe() };
    });

    expect(unshelved).toMatchObject({ vmState: 'active', taskState: null, host });
    expect(timer.status.name).toBe('CANCELLED');
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'powerOnInstance']);
    expect(fake.images.size).toBe(0);
  });

  it('deleted while its offload timer waits: DELETED, the snapshot deleted, the timer cancelled', async () => {
    const { fake, instanceUuid, compute, shelve, run } = setUp();

    const timer = await run(async (taskQueue) => {
      const shelved = await shelve(taskQueue, 3600);
      await temporal.env.client.workflow.execute(deleteInstance, {
        taskQueue,
        workflowId: `delete-${instanceUuid}`,
        args: [{ instanceUuid }],
      });
      const timer = temporal.env.client.workflow.getHandle(
        offloadTimerWorkflowId(instanceUuid, shelved.systemMetadata.shelved_image_id!),
      );
      await timer.result().catch(() => undefined);
      return timer.describe();
    });

    expect(timer.status.name).toBe('CANCELLED');
    expect(() => fake.instance(instanceUuid)).toThrow(/could not be found/);
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'destroyInstance']);
    expect(fake.images.size).toBe(0);
    expect(fake.actions(instanceUuid).map(({ action, message }) => [action, message])).toEqual([
      ['shelve', null],
      ['delete', null],
    ]);
  });

  it('offloaded by its timer on the second try: the first removal failed with the domain still there', async () => {
    let removals = 0;
    const { fake, instanceUuid, compute, shelve, run } = setUp((uuid) => ({
      async destroyInstance() {
        if (++removals === 1) {
          throw ApplicationFailure.nonRetryable('the instance folder could not be removed', 'HostDiskError');
        }
      },
      async listInstancePowerStates() {
        return removals < 2 ? { [uuid]: PowerState.SHUTDOWN } : {};
      },
    }));

    const offloaded = await run(async (taskQueue) => {
      const shelved = await shelve(taskQueue, 1);
      return temporal.env.client.workflow
        .getHandle(offloadTimerWorkflowId(instanceUuid, shelved.systemMetadata.shelved_image_id!))
        .result();
    });

    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(compute.calls).toEqual([
      'powerOffInstance',
      'snapshotInstance',
      'destroyInstance',
      'listInstancePowerStates',
      'destroyInstance',
    ]);
    expect(fake.actions(instanceUuid).map(({ action, message }) => [action, message])).toEqual([
      ['shelve', null],
      ['shelveOffload', 'Error'],
      ['shelveOffload', null],
    ]);
  });

  it('never offloaded by itself, offloaded when asked: SHELVED_OFFLOADED, its snapshot kept', async () => {
    const { fake, instanceUuid, compute, shelve, run } = setUp();

    const { shelved, offloaded } = await run(async (taskQueue) => {
      const shelved = await shelve(taskQueue, -1);
      const offloaded = await temporal.env.client.workflow.execute(shelveOffloadInstance, {
        taskQueue,
        workflowId: `offload-${instanceUuid}`,
        args: [{ instanceUuid }],
      });
      return { shelved, offloaded };
    });

    expect(shelved).toMatchObject({ vmState: 'shelved', taskState: null });
    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'destroyInstance']);
    expect(fake.images.get(shelved.systemMetadata.shelved_image_id!)).toMatchObject({ status: 'active' });
    expect(fake.actions(instanceUuid).map(({ action }) => action)).toEqual(['shelve', 'shelveOffload']);
  });
});
