// The offload timer a shelve with shelved_offload_time > 0 starts (workflows/offload-timer.ts), on
// fake conductor activities and a stub compute host.
//
// These timers last seconds, in real time: the dev server does not skip time. The day-long one
// (shelved_offload_time 86400) runs on a compressed clock: ./compressed-clock.ts makes a day last a
// second and records the duration the workflow asked for, which the test reads from the history.
import { fileURLToPath } from 'node:url';
import { defaultPayloadConverter } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { offloadTimerWorkflowId } from '../../lib/temporal.js';
import { shelvedOffloadTimer, shelveInstance, unshelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import { askedFor } from './compressed-clock.js';
import { type MockedTemporal, newHost, startMockedTemporal, stubCompute, withWorkers } from './environment.js';

describe('the offload timer', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal([fileURLToPath(new URL('./compressed-clock.ts', import.meta.url))]);
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  const shelve = (taskQueue: string, instanceUuid: string, shelvedOffloadTime: number, attempt = 1) =>
    temporal.env.client.workflow.execute(shelveInstance, {
      taskQueue,
      workflowId: `shelve-${instanceUuid}-${attempt}`,
      args: [{ instanceUuid, shelvedOffloadTime }],
    });

  it('fires after shelved_offload_time and offloads the SHELVED instance, its snapshot kept', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    const compute = stubCompute(fake);

    const { shelved, offloaded } = await withWorkers(temporal, fake, host, compute, async (taskQueue) => {
      const shelved = await shelve(taskQueue, instanceUuid, 2);
      const timer = temporal.env.client.workflow.getHandle<typeof shelvedOffloadTimer>(
        offloadTimerWorkflowId(instanceUuid, shelved.systemMetadata.shelved_image_id!),
      );
      return { shelved, offloaded: await timer.result() };
    });

    expect(shelved).toMatchObject({ vmState: 'shelved', taskState: null, host });
    const imageId = shelved.systemMetadata.shelved_image_id!;
    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(fake.instance(instanceUuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
      systemMetadata: { shelved_image_id: imageId },
    });
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'destroyInstance']);
    expect(fake.images.get(imageId)).toMatchObject({ status: 'active' });
    expect(fake.actions(instanceUuid).map(({ action, message }) => [action, message])).toEqual([
      ['shelve', null],
      ['shelveOffload', null],
    ]);
  });

  it('of a day (shelved_offload_time 86400) asks Temporal for a day, then offloads when it fires', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    const compute = stubCompute(fake);

    const { offloaded, timerSummaries } = await withWorkers(temporal, fake, host, compute, async (taskQueue) => {
      const shelved = await shelve(taskQueue, instanceUuid, 86400);
      const timer = temporal.env.client.workflow.getHandle<typeof shelvedOffloadTimer>(
        offloadTimerWorkflowId(instanceUuid, shelved.systemMetadata.shelved_image_id!),
      );
      const offloaded = await timer.result();
      const { events } = await timer.fetchHistory();
      const timerSummaries = (events ?? [])
        .filter((event) => event.timerStartedEventAttributes)
        .map((event) =>
          event.userMetadata?.summary ? defaultPayloadConverter.fromPayload<string>(event.userMetadata.summary) : null,
        );
      return { offloaded, timerSummaries };
    });

    expect(timerSummaries).toEqual([askedFor(86_400_000)]);
    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(compute.calls).toEqual(['powerOffInstance', 'snapshotInstance', 'destroyInstance']);
  });

  it('of a shelve that is over (unshelved, then shelved again) does nothing when it fires', async () => {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    const compute = stubCompute(fake);

    const { first, second, stale } = await withWorkers(temporal, fake, host, compute, async (taskQueue) => {
      const first = await shelve(taskQueue, instanceUuid, -1, 1);
      await temporal.env.client.workflow.execute(unshelveInstance, {
        taskQueue,
        workflowId: `unshelve-${instanceUuid}`,
        args: [{ instanceUuid }],
      });
      const second = await shelve(taskQueue, instanceUuid, -1, 2);
      // The first shelve's timer, firing now.
      const stale = await temporal.env.client.workflow.execute(shelvedOffloadTimer, {
        taskQueue,
        workflowId: offloadTimerWorkflowId(instanceUuid, first.systemMetadata.shelved_image_id!),
        args: [{ instanceUuid, shelvedImageId: first.systemMetadata.shelved_image_id!, seconds: 0 }],
      });
      return { first, second, stale };
    });

    expect(stale).toBeNull();
    const secondImageId = second.systemMetadata.shelved_image_id!;
    expect(secondImageId).not.toBe(first.systemMetadata.shelved_image_id);
    expect(fake.instance(instanceUuid)).toMatchObject({
      vmState: 'shelved',
      taskState: null,
      host,
      systemMetadata: { shelved_image_id: secondImageId },
    });
    expect(compute.calls).not.toContain('destroyInstance');
    expect([...fake.images.keys()]).toEqual([secondImageId]);
    expect(fake.actions(instanceUuid).map(({ action }) => action)).toEqual(['shelve', 'unshelve', 'shelve']);
  });
});
