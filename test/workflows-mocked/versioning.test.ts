// workflows/README.md's policy, run: a conductor is upgraded while an offload timer waits, to code
// that changes the offload timer behind patched() (./offload-timer-next.ts, a workflow interceptor
// that reads the settings before the timer starts; the real workflow is not changed). The timer
// started on the old code is replayed by the new worker, takes the old path and offloads; one
// started on the new code takes the new path and offloads too.
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { WorkflowHandle } from '@temporalio/client';
import { Runtime, type WorkflowBundle } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { offloadTimerWorkflowId } from '../../lib/temporal.js';
import { shelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import {
  bundleConductorWorkflows,
  type MockedTemporal,
  newHost,
  startMockedTemporal,
  stubCompute,
  withWorkers,
} from './environment.js';

/** What a run did before its timer started: its patch markers and activities, in order. */
async function beforeTimer(handle: WorkflowHandle): Promise<string[]> {
  const events = (await handle.fetchHistory()).events ?? [];
  const timer = events.findIndex((event) => event.timerStartedEventAttributes);
  return events
    .slice(0, timer)
    .flatMap((event) =>
      event.markerRecordedEventAttributes
        ? ['marker']
        : event.activityTaskScheduledEventAttributes
          ? [event.activityTaskScheduledEventAttributes.activityType!.name!]
          : [],
    );
}

/** The build ids (by default a hash of the Worker's bundle) of the workers that completed its tasks. */
async function buildIds(handle: WorkflowHandle): Promise<Set<string>> {
  const events = (await handle.fetchHistory()).events ?? [];
  return new Set(events.flatMap((event) => event.workflowTaskCompletedEventAttributes?.workerVersion?.buildId ?? []));
}

describe('an offload timer waiting while the conductor is upgraded', () => {
  let temporal: MockedTemporal;
  let nextBundle: WorkflowBundle;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
    nextBundle = await bundleConductorWorkflows(Runtime.instance().logger, [
      fileURLToPath(new URL('./offload-timer-next.ts', import.meta.url)),
    ]);
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  it(
    'completes on the old path, and a timer started on the new code on the new path',
    { timeout: 60_000 },
    async () => {
      const host = newHost();
      const fake = createFakeConductor([host]);
      const [oldUuid, newUuid] = [fake.addInstance(host), fake.addInstance(host)];
      const compute = stubCompute(fake);
      const taskQueue = `conductor-${randomUUID()}`;
      const shelveWithTimer = async (instanceUuid: string, seconds: number) => {
        const shelved = await temporal.env.client.workflow.execute(shelveInstance, {
          taskQueue,
          workflowId: `shelve-${instanceUuid}`,
          args: [{ instanceUuid, shelvedOffloadTime: seconds }],
        });
        return temporal.env.client.workflow.getHandle(
          offloadTimerWorkflowId(instanceUuid, shelved.systemMetadata.shelved_image_id!),
        );
      };

      // The old conductor: the shelve ends, its timer starts waiting, the conductor stops.
      const oldTimer = await withWorkers(
        temporal,
        fake,
        host,
        compute,
        async () => {
          const timer = await shelveWithTimer(oldUuid, 5);
          while (!(await timer.fetchHistory()).events?.some((event) => event.timerStartedEventAttributes)) {
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
          return timer;
        },
        taskQueue,
      );

      // The new conductor, on the same task queue.
      const { oldOffloaded, newOffloaded, newTimer } = await withWorkers(
        { env: temporal.env, workflowBundle: nextBundle },
        fake,
        host,
        compute,
        async () => {
          const newTimer = await shelveWithTimer(newUuid, 1);
          const [oldOffloaded, newOffloaded] = await Promise.all([oldTimer.result(), newTimer.result()]);
          return { oldOffloaded, newOffloaded, newTimer };
        },
        taskQueue,
      );

      expect(oldOffloaded).toMatchObject({ uuid: oldUuid, vmState: 'shelved_offloaded', host: null });
      expect(newOffloaded).toMatchObject({ uuid: newUuid, vmState: 'shelved_offloaded', host: null });
      expect(await beforeTimer(oldTimer)).toEqual([]);
      expect(await beforeTimer(newTimer)).toEqual(['marker', 'conductorSettings']);
      // Both conductors worked on the old timer: started by the old one, ended by the new one.
      expect((await buildIds(oldTimer)).size).toBe(2);
    },
  );
});
