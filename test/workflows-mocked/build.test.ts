// Builds, on fake conductor activities and stub compute hosts: on the host the scheduler picks, on
// an alternate when the first host's worker does not take the spawn, and one whose spawn fails.
// Besides their own checks, they give scripts/record-histories the histories of these paths.
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SpawnRequest } from '../../activities/compute/spawn.js';
import { PowerState } from '../../lib/nova.js';
import { computeTaskQueue } from '../../lib/temporal.js';
import { buildInstance } from '../../workflows/index.js';
import { createFakeConductor, type FakeConductor, INSTANCE_OWNER } from '../support/fake-activities.js';
import { type MockedTemporal, newHost, startMockedTemporal, stubCompute, withWorkers } from './environment.js';

const flavor = { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 };

describe('a build', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  /** Builds a server of INSTANCE_OWNER's from `imageRef`, on the host the scheduler picks. */
  const build = (taskQueue: string, instanceUuid: string, imageRef: string) =>
    temporal.env.client.workflow.execute(buildInstance, {
      taskQueue,
      workflowId: `build-${instanceUuid}`,
      args: [{ instanceUuid, displayName: 'vm', ...INSTANCE_OWNER, imageRef, flavor }],
    });

  /** The actions log of the instance as [action, message] and its steps as [event, result, host]. */
  const actionsOf = (fake: FakeConductor, instanceUuid: string) =>
    fake.actions(instanceUuid).map(({ action, message, events }) => ({
      action,
      message,
      events: events.map(({ event, result, host }) => [event, result, host]),
    }));

  it('on the host the scheduler picks: ACTIVE there, spawned over its image, the image properties kept', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const imageRef = fake.addImage();
    const spawns: SpawnRequest[] = [];
    const compute = stubCompute(fake, {
      async spawnInstance(request) {
        spawns.push(request);
        return PowerState.RUNNING;
      },
    });
    const instanceUuid = randomUUID();

    const built = await withWorkers(temporal, fake, host, compute, (taskQueue) =>
      build(taskQueue, instanceUuid, imageRef),
    );

    expect(built).toMatchObject({
      uuid: instanceUuid,
      vmState: 'active',
      taskState: null,
      powerState: PowerState.RUNNING,
      host,
      node: host,
      imageRef,
    });
    expect(built.launchedAt).not.toBeNull();
    expect(built.systemMetadata).toMatchObject({ image_disk_format: 'qcow2', image_min_disk: '1' });
    expect(compute.calls).toEqual(['spawnInstance']);
    expect(spawns.map(({ instance, root }) => [instance.host, root])).toEqual([
      [host, { kind: 'overlay', imageId: imageRef }],
    ]);
    expect(actionsOf(fake, instanceUuid)).toEqual([
      {
        action: 'create',
        message: null,
        events: [
          ['schedule_instances', 'Success', null],
          ['compute_build_and_run_instance', 'Success', host],
        ],
      },
    ]);
  });

  it('whose first host does not take the spawn: spawned on an alternate, ACTIVE there', async () => {
    // Sorts first, so the scheduler picks it first: up, but its compute worker is not running.
    const silent = newHost();
    const alternate = `${silent}-alternate`;
    const fake = createFakeConductor([silent, alternate], { spawnStartTimeout: 1 });
    const imageRef = fake.addImage();
    const compute = stubCompute(fake);
    const instanceUuid = randomUUID();

    const { built, spawnQueues } = await withWorkers(temporal, fake, alternate, compute, async (taskQueue) => {
      const built = await build(taskQueue, instanceUuid, imageRef);
      const { events } = await temporal.env.client.workflow.getHandle(`build-${instanceUuid}`).fetchHistory();
      const spawnQueues = (events ?? [])
        .map((event) => event.activityTaskScheduledEventAttributes)
        .filter((scheduled) => scheduled?.activityType?.name === 'spawnInstance')
        .map((scheduled) => scheduled?.taskQueue?.name);
      return { built, spawnQueues };
    });

    expect(built).toMatchObject({ vmState: 'active', taskState: null, host: alternate });
    expect(spawnQueues).toEqual([computeTaskQueue(silent), computeTaskQueue(alternate)]);
    expect(compute.calls).toEqual(['spawnInstance']);
    // Each step's row holds its last try: the second placement and the spawn on the alternate.
    expect(actionsOf(fake, instanceUuid)).toEqual([
      {
        action: 'create',
        message: null,
        events: [
          ['schedule_instances', 'Success', null],
          ['compute_build_and_run_instance', 'Success', alternate],
        ],
      },
    ]);
  });

  it('whose spawn fails: ERROR on no host, the domain removed, the action Error', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const imageRef = fake.addImage();
    const compute = stubCompute(fake, {
      async spawnInstance() {
        throw ApplicationFailure.nonRetryable('QEMU refused to start the domain', 'SpawnFailed');
      },
    });
    const instanceUuid = randomUUID();

    const error = await withWorkers(temporal, fake, host, compute, (taskQueue) =>
      build(taskQueue, instanceUuid, imageRef).catch((failure: unknown) => failure),
    );

    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect((error as WorkflowFailedError).cause).toMatchObject({ type: 'SpawnFailed' });
    expect(compute.calls).toEqual(['spawnInstance', 'destroyInstance']);
    expect(fake.instance(instanceUuid)).toMatchObject({ vmState: 'error', taskState: null, host: null, node: null });
    expect(actionsOf(fake, instanceUuid)).toEqual([
      {
        action: 'create',
        message: 'Error',
        events: [
          ['schedule_instances', 'Success', null],
          ['compute_build_and_run_instance', 'Error', host],
        ],
      },
    ]);
  });
});
