// A compute host whose activities are stubs, registered with the scheduler like a real one:
// for workflow tests whose subject is the workflow, not the hypervisor.
import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { WorkflowHandle } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import type { ComputeActivities } from '../../activities/compute/index.js';
import { reportComputeNode } from '../../lib/db/compute-services.js';
import { startAction } from '../../lib/actions.js';
import { type Instance, PowerState } from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';
import { computeTaskQueue } from '../../lib/temporal.js';
import { HEARTBEAT_THROTTLE } from '../../workers/compute.js';
import { connectWorker } from '../../workers/runtime.js';
import type { TestStack } from './stack.js';

/**
 * A project of each test run's own: the workflow tests leave their stub servers in the database,
 * and a project's network has addresses for 253 live ports.
 */
export const testOwner = { projectId: `wf-project-${randomUUID().slice(0, 8)}`, userId: 'wf-user' };

interface BuildOptions {
  instanceUuid?: string;
  availabilityZone?: string;
  memoryMb?: number;
}

export interface StubHost {
  host: string;
  /** Image ids the stub's snapshotInstance was called with, in order. */
  snapshots: string[];
  /** What the stub's snapshotInstance does: records the image id and uploads a few bytes into it. */
  snapshot(imageId: string): Promise<UploadedSnapshot>;
  /** Starts the build of an instance on this host (its boot image is an empty one in Glance). */
  startBuild(options?: BuildOptions): Promise<WorkflowHandle>;
  /** Builds an ACTIVE instance on this host. */
  buildInstance(options?: BuildOptions): Promise<Instance>;
  /** Stops the host and removes its boot image and, unless kept, the snapshots it made. */
  stop(options?: { keepSnapshots?: boolean }): Promise<void>;
}

/**
 * Compute activities that succeed at once, with `snapshot` as the upload, but for `overrides`:
 * for tests whose subject is the workflow, not the hypervisor.
 */
export function stubComputeActivities(
  snapshot: (imageId: string) => Promise<UploadedSnapshot>,
  overrides: Partial<ComputeActivities> = {},
): ComputeActivities {
  return {
    async powerOffInstance() {
      return PowerState.SHUTDOWN;
    },
    snapshotInstance: ({ imageId }) => snapshot(imageId),
    async destroyInstance() {},
    async spawnInstance() {
      return PowerState.RUNNING;
    },
    async powerOnInstance() {
      return PowerState.RUNNING;
    },
    // A stub host has no domains: the reconciler must not be pointed at its instances.
    async listInstancePowerStates() {
      return {};
    },
    ...overrides,
  };
}

export interface StubHostOptions {
  /** Its name; a new one each time unless a test brings a host back. */
  host?: string;
  availabilityZone?: string;
  /** Memory the host offers the scheduler; ample unless a test is about capacity. */
  memoryMb?: number;
}

export async function startStubHost(
  stack: TestStack,
  overrides: Partial<ComputeActivities> = {},
  { host = `stub-${randomUUID().slice(0, 8)}`, availabilityZone = 'nova', memoryMb = 64 * 1024 }: StubHostOptions = {},
): Promise<StubHost> {
  const snapshots: string[] = [];
  const snapshot = async (imageId: string) => {
    snapshots.push(imageId);
    const data = Buffer.from('stub snapshot');
    await stack.glance.uploadImageData(stack.glance.snapshotContext, imageId, Readable.from([data]), data.length);
    const osHashAlgo = stack.glance.hashingAlgorithm;
    return { size: data.length, osHashAlgo, osHashValue: createHash(osHashAlgo).update(data).digest('hex') };
  };
  const activities = stubComputeActivities(snapshot, overrides);
  const connection = await connectWorker(stack.config);
  const worker = await Worker.create({
    connection,
    taskQueue: computeTaskQueue(host),
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    activities,
  });
  const running = worker.run().finally(() => connection.close());
  const report = () =>
    reportComputeNode(stack.pool, {
      host,
      availabilityZone,
      hypervisorType: 'stub',
      vcpus: 64,
      memoryMb,
      localGb: 100,
      cpuAllocationRatio: 4,
      ramAllocationRatio: 1,
      diskAllocationRatio: 1,
    });
  await report();
  // As a real host: reported every 10 s, or a test longer than the service-down window finds it down.
  const reporting = setInterval(() => void report().catch(() => undefined), 10_000);

  // The stub host never reads the boot image: an empty one is enough.
  const bootImageId = randomUUID();
  await stack.glance.createImage(testOwner, {
    id: bootImageId,
    name: 'wf-boot',
    owner: testOwner.projectId,
    visibility: 'private',
    disk_format: 'qcow2',
    container_format: 'bare',
  });
  await stack.glance.uploadImageData(testOwner, bootImageId, Readable.from([]), 0);

  const startBuild = ({
    instanceUuid = randomUUID(),
    availabilityZone: pinned,
    memoryMb: flavorMemoryMb = 128,
  }: BuildOptions = {}) =>
    startAction(stack.client, stack.config, 'build', {
      instanceUuid,
      displayName: 'wf',
      ...testOwner,
      imageRef: bootImageId,
      flavor: {
        flavorid: '1',
        name: 'm1.tiny',
        vcpus: 1,
        memoryMb: flavorMemoryMb,
        rootGb: 1,
        ephemeralGb: 0,
        swap: 0,
      },
      availabilityZone: pinned,
      host,
    });

  return {
    host,
    snapshots,
    snapshot,
    startBuild,
    async buildInstance(options) {
      return (await (await startBuild(options)).result()) as Instance;
    },
    async stop({ keepSnapshots = false } = {}) {
      clearInterval(reporting);
      worker.shutdown();
      await running;
      await stack.glance.deleteImage(testOwner, bootImageId);
      if (!keepSnapshots) {
        for (const imageId of snapshots) await stack.glance.unprotectAndDelete(stack.glance.snapshotContext, imageId);
      }
      // Gone, so that no later test's scheduler picks this host.
      await stack.pool.query('DELETE FROM compute_nodes WHERE host = $1', [host]);
    },
  };
}
