// The actions' main paths, on fake conductor activities and a stub compute host: a shelve that
// offloads at once and its unshelve (on the host the scheduler picks, or on another one named), a
// shelve whose offload timer an unshelve or a delete ends, an offload timer that tries again, an
// offload asked for, a volume-backed instance's shelve and unshelve.
// Besides their own checks, they give scripts/record-histories the histories of these paths.
import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ComputeActivities } from '../../activities/compute/index.js';
import type { SpawnRequest } from '../../activities/compute/spawn.js';
import { PowerState, rootVolume } from '../../lib/nova.js';
import { offloadTimerWorkflowId } from '../../lib/temporal.js';
import { deleteInstance, shelveInstance, shelveOffloadInstance, unshelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import {
  type MockedTemporal,
  newHost,
  startMockedTemporal,
  stubCompute,
  withComputeWorker,
  withWorkers,
} from './environment.js';

describe('an instance shelved and then', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  /**
   * An instance on a host of its own (booted from a volume if asked), and the workers that act on
   * it; `otherHosts` are the scheduler's too, their compute workers the test's to run.
   */
  function setUp(
    overrides: (instanceUuid: string) => Partial<ComputeActivities> = () => ({}),
    { volumeBacked = false, otherHosts = [] as string[] } = {},
  ) {
    const host = newHost();
    const fake = createFakeConductor([host, ...otherHosts]);
    const instanceUuid = fake.addInstance(host, { volumeBacked });
    const compute = stubCompute(fake, overrides(instanceUuid));
    const shelve = (taskQueue: string, shelvedOffloadTime: number) =>
      temporal.env.client.workflow.execute(shelveInstance, {
        taskQueue,
        workflowId: `shelve-${instanceUuid}`,
        args: [{ instanceUuid, shelvedOffloadTime }],
      });
    const run = <T>(body: (taskQueue: string) => Promise<T>) => withWorkers(temporal, fake, host, compute, body);
    const unshelve = (taskQueue: string, input: { host?: string } = {}) =>
      temporal.env.client.workflow.execute(unshelveInstance, {
        taskQueue,
        workflowId: `unshelve-${instanceUuid}`,
        args: [{ instanceUuid, ...input }],
      });
    return { host, fake, instanceUuid, compute, shelve, unshelve, run };
  }

  /** Compute activities that record each spawn's request. */
  function recordingSpawns(): { spawns: SpawnRequest[]; overrides: Partial<ComputeActivities> } {
    const spawns: SpawnRequest[] = [];
    return {
      spawns,
      overrides: {
        async spawnInstance(request) {
          spawns.push(request);
          return PowerState.RUNNING;
        },
      },
    };
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

  it('offloaded at once, unshelved onto a host named in the request: spawned there, not where the scheduler would', async () => {
    // Sorts after the instance's own h1- host, which the scheduler would pick: both hosts have room.
    const named = `h2-${randomUUID().slice(0, 8)}`;
    const { spawns, overrides } = recordingSpawns();
    const { fake, instanceUuid, compute, shelve, unshelve, run } = setUp(() => ({}), { otherHosts: [named] });
    const namedCompute = stubCompute(fake, overrides);

    const { offloaded, unshelved } = await run((taskQueue) =>
      withComputeWorker(temporal, named, namedCompute, async () => {
        const offloaded = await shelve(taskQueue, 0);
        return { offloaded, unshelved: await unshelve(taskQueue, { host: named }) };
      }),
    );

    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', host: null });
    expect(unshelved).toMatchObject({ vmState: 'active', taskState: null, host: named, node: named });
    expect(unshelved.systemMetadata).not.toHaveProperty('shelved_image_id');
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'destroyInstance']);
    expect(namedCompute.calls).toEqual(['spawnInstance']);
    const imageId = offloaded.systemMetadata.shelved_image_id!;
    expect(spawns.map(({ root }) => root)).toEqual([
      { kind: 'standalone', imageId, snapshot: { osHashAlgo: 'sha512', osHashValue: `hash-of-${imageId}` } },
    ]);
    expect(fake.images.size).toBe(0);
    const [, unshelveAction] = fake.actions(instanceUuid);
    expect(unshelveAction).toMatchObject({ action: 'unshelve', message: null });
    expect(unshelveAction!.events.map(({ event, host: on }) => [event, on])).toEqual([
      ['get_image_info', null],
      ['schedule_instances', null],
      ['compute_unshelve_instance', named],
      ['delete_snapshot_image', null],
    ]);
  });

  it('booted from a volume, unshelved: offloaded at once with no snapshot, spawned on its own volume', async () => {
    const { spawns, overrides } = recordingSpawns();
    const { host, fake, instanceUuid, compute, run, unshelve } = setUp(() => overrides, { volumeBacked: true });
    const volume = rootVolume(fake.instance(instanceUuid))!;

    const { shelved, unshelved } = await run(async (taskQueue) => {
      // No shelved_offload_time: the conductor's is -1, never, which a volume-backed shelve ignores.
      const shelved = await temporal.env.client.workflow.execute(shelveInstance, {
        taskQueue,
        workflowId: `shelve-${instanceUuid}`,
        args: [{ instanceUuid }],
      });
      return { shelved, unshelved: await unshelve(taskQueue) };
    });

    expect(shelved).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(Object.keys(shelved.systemMetadata).filter((key) => key.startsWith('shelved_'))).toEqual([]);
    expect(unshelved).toMatchObject({ vmState: 'active', taskState: null, host, imageRef: '' });
    expect(compute.calls).toEqual(['powerOffInstance', 'destroyInstance', 'spawnInstance']);
    expect(spawns.map(({ root }) => root)).toEqual([
      { kind: 'volume', volumeId: volume.volumeId, imageId: null, sizeGb: 0 },
    ]);
    expect(fake.images.size).toBe(0);
    const steps = fake
      .actions(instanceUuid)
      .map(({ action, message, events }) => [action, message, events.map(({ event }) => event)]);
    expect(steps).toEqual([
      ['shelve', null, ['compute_power_off_instance', 'compute_shelve_offload_instance']],
      ['unshelve', null, ['schedule_instances', 'compute_unshelve_instance']],
    ]);
  });
});
