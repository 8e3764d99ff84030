// Build: create an instance from a Glance image and a flavor on a host, as Nova's boot does in
// short: record it, pick a host, build its disk, define and start its domain, record it ACTIVE.
import { ApplicationFailure, setCurrentDetails, uuid4 } from '@temporalio/workflow';
import {
  type BlockDeviceMapping,
  type Flavor,
  imageSystemMetadata,
  type Instance,
  macAddress,
  TaskState,
  VmState,
} from '../lib/nova.js';
import { recordAction, recordStep } from './action-log.js';
import { database, images } from './activities.js';
import { applicationFailureOf } from './failures.js';
import { tagWorkflow } from './input.js';
import { placeAndSpawn, undoSpawn } from './placement.js';
import { saveActive } from './steps.js';

export interface BuildInput {
  /** Chosen by the caller so it can name the workflow after it; made here when absent. */
  instanceUuid?: string;
  displayName: string;
  projectId: string;
  userId: string;
  imageRef: string;
  flavor: Flavor;
  /**
   * Boot from a new volume of this size made from the image (Nova's block_device_mapping_v2 with
   * source image, destination volume): the instance is volume-backed.
   */
  bootVolume?: { sizeGb: number };
  /** Pin the instance to this availability zone, for this build and every later unshelve. */
  availabilityZone?: string;
  host?: string;
  requestId?: string;
}

export async function buildInstance(input: BuildInput): Promise<Instance> {
  for (const field of ['displayName', 'projectId', 'userId', 'imageRef'] as const) {
    if (typeof input?.[field] !== 'string' || input[field] === '') {
      throw ApplicationFailure.create({
        type: 'InvalidInput',
        message: `buildInstance needs ${field} (a non-empty string)`,
        nonRetryable: true,
      });
    }
  }
  const instanceUuid = input.instanceUuid ?? uuid4();
  const requestId = input.requestId ?? `req-${instanceUuid}`;
  tagWorkflow({ instanceUuid, action: 'build' });
  const owner = { projectId: input.projectId, userId: input.userId };

  setCurrentDetails(`checking image ${input.imageRef}`);
  const image = await images
    .getActiveImage({ owner, imageId: input.imageRef })
    .catch((error: unknown) => Promise.reject(applicationFailureOf(error)));
  setCurrentDetails('recording the instance');
  const portId = uuid4();
  // Chosen here, so that a retried spawn finds the volume it made.
  const rootVolume: BlockDeviceMapping | null = input.bootVolume
    ? {
        bootIndex: 0,
        sourceType: 'image',
        destinationType: 'volume',
        imageId: input.imageRef,
        volumeId: uuid4(),
        volumeSizeGb: input.bootVolume.sizeGb,
        deviceName: 'vda',
      }
    : null;
  await database.createInstance({
    uuid: instanceUuid,
    displayName: input.displayName,
    projectId: input.projectId,
    userId: input.userId,
    // As Nova: a volume-backed instance has no image of its own; its volume was made from one.
    imageRef: rootVolume ? '' : input.imageRef,
    blockDeviceMappings: rootVolume ? [rootVolume] : [],
    ports: [{ id: portId, network: 'private', macAddress: macAddress(portId) }],
    flavor: input.flavor,
    availabilityZone: input.availabilityZone ?? null,
    requestId,
    systemMetadata: imageSystemMetadata(image),
  });

  /** ERROR, free for a delete, and on no host: its capacity is not counted for it. */
  const fail = async () => {
    await database.saveInstance({
      instanceUuid,
      requestId,
      expectedTaskStates: [TaskState.SPAWNING],
      changes: { vmState: VmState.ERROR, taskState: null, host: null, node: null },
    });
  };

  return recordAction(
    requestId,
    () =>
      placeAndSpawn(
        requestId,
        {
          instanceUuid,
          requestId,
          expectedTaskStates: [TaskState.SPAWNING],
          changes: {},
          flavor: input.flavor,
          availabilityZone: input.availabilityZone ?? null,
          requestedHost: input.host,
        },
        ({ destination, instance, compute }) =>
          recordStep(
            {
              requestId,
              name: 'compute_build_and_run_instance',
              host: destination.host,
              details: `spawning on ${destination.host}`,
            },
            async () => {
              const powerState = await compute(destination.host).spawnInstance({
                instance,
                requestId,
                root: rootVolume
                  ? {
                      kind: 'volume',
                      volumeId: rootVolume.volumeId!,
                      imageId: input.imageRef,
                      sizeGb: input.bootVolume!.sizeGb,
                    }
                  : { kind: 'overlay', imageId: input.imageRef },
              });
              return saveActive({
                instanceUuid,
                requestId,
                expectedTaskState: TaskState.SPAWNING,
                powerState,
                launched: true,
              });
            },
          ),
        async (host, compute, error) => {
          await undoSpawn(host, compute, error, instanceUuid);
          await fail();
        },
      ),
    () => fail(),
  );
}
