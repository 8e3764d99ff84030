// Unshelve: a SHELVED instance powers on again on its own host; a SHELVED_OFFLOADED one is
// spawned as new from its snapshot on a host the scheduler picks (or the one asked for). Then
// the snapshot is deleted and the shelve metadata cleared (docs/nova-behaviour.md §1.6).
import { ApplicationFailure } from '@temporalio/workflow';
import type { RootDiskSource } from '../activities/compute/spawn.js';
import { type Instance, PowerState, rootVolume, SHELVE_METADATA_KEYS, TaskState, VmState } from '../lib/nova.js';
import { targetZone } from '../lib/scheduler.js';
import { recordAction, recordStep } from './action-log.js';
import { type ComputeHosts, configuredComputeHosts, database, images } from './activities.js';
import { type ActionInput, checkedInput, tagWorkflow } from './input.js';
import { placeAndSpawn, undoSpawn } from './placement.js';
import { settling, withRollback } from './rollback.js';
import { cancelOffloadTimer, claim, deleteSnapshotImage, saveActive } from './steps.js';

export interface UnshelveInput extends ActionInput {
  /** Spawn on this host (Nova 2.91, admin-only through the API); only for SHELVED_OFFLOADED. */
  host?: string;
  /**
   * Spawn in this availability zone and pin the instance to it (Nova 2.77), or null to unpin it
   * (2.91); absent keeps the zone it is pinned to. Only for SHELVED_OFFLOADED.
   */
  availabilityZone?: string | null;
}

function checkedPlacement(input: UnshelveInput): void {
  const { host, availabilityZone } = input;
  const refuse = (why: string) =>
    ApplicationFailure.create({ type: 'InvalidInput', message: `unshelveInstance: ${why}`, nonRetryable: true });
  if (host !== undefined && typeof host !== 'string')
    throw refuse(`host must be a string, got ${JSON.stringify(host)}`);
  if (availabilityZone !== undefined && availabilityZone !== null && typeof availabilityZone !== 'string') {
    throw refuse(`availabilityZone must be a string or null, got ${JSON.stringify(availabilityZone)}`);
  }
}

export async function unshelveInstance(rawInput: UnshelveInput): Promise<Instance> {
  const input = checkedInput('unshelveInstance', rawInput);
  const { instanceUuid, requestId } = input;
  checkedPlacement(input);
  tagWorkflow({ instanceUuid, action: 'unshelve' });

  const instance = await claim({
    instanceUuid,
    action: 'unshelve',
    requestId,
    userId: input.userId,
    projectId: input.projectId,
  });
  const imageId = instance.systemMetadata.shelved_image_id;
  const release = () => database.releaseInstance({ instanceUuid, requestId });

  return recordAction(
    requestId,
    async () => {
      const compute = await configuredComputeHosts();

      const unshelved = await withRollback(
        async () => {
          if (instance.vmState === VmState.SHELVED) {
            if (input.host || 'availabilityZone' in input) {
              throw ApplicationFailure.create({
                type: 'UnshelveInstanceInvalidState',
                message: `The unshelve of instance ${instanceUuid} names a host or an availability zone, but its status is SHELVED. The server status must be SHELVED_OFFLOADED.`,
                nonRetryable: true,
              });
            }
            return powerOnInPlace(instance, requestId, compute);
          }
          return spawnFromSnapshot(instance, requestId, input);
        },
        () => database.releaseInstance({ instanceUuid, requestId }),
      );

      // Only now: an unshelve that failed leaves the instance SHELVED, and its timer still running.
      // The instance is ACTIVE: a cancel from here on does not leave its snapshot behind.
      await settling(async () => {
        if (imageId && instance.vmState === VmState.SHELVED) await cancelOffloadTimer(instanceUuid, imageId);
        if (imageId) await deleteSnapshotImage(requestId, instance, imageId);
      });
      return unshelved;
    },
    release,
  );
}

async function powerOnInPlace(instance: Instance, requestId: string, compute: ComputeHosts): Promise<Instance> {
  const { uuid: instanceUuid, host } = instance;
  tagWorkflow({ host });
  await database.saveInstance({
    instanceUuid,
    requestId,
    expectedTaskStates: [TaskState.UNSHELVING],
    changes: { taskState: TaskState.POWERING_ON },
  });
  return recordStep(
    { requestId, name: 'compute_start_instance', host, details: `powering on on ${host}` },
    async () => {
      const powerState = await compute(host!).powerOnInstance({ instanceUuid });
      return saveActive({
        instanceUuid,
        requestId,
        expectedTaskState: TaskState.POWERING_ON,
        powerState,
        removeSystemMetadata: SHELVE_METADATA_KEYS,
      });
    },
  );
}

/**
 * A volume-backed instance comes back on its own volume (no image, docs/nova-behaviour.md §4); any other from its
 * shelve snapshot, which must still be in Glance.
 */
async function rootDiskSource(instance: Instance, requestId: string): Promise<RootDiskSource> {
  const volume = rootVolume(instance);
  if (volume?.volumeId) return { kind: 'volume', volumeId: volume.volumeId, imageId: null, sizeGb: 0 };
  const imageId = instance.systemMetadata.shelved_image_id;
  if (!imageId) {
    throw ApplicationFailure.create({
      type: 'UnshelveException',
      message: `Instance ${instance.uuid} has no shelved_image_id to unshelve from.`,
      nonRetryable: true,
    });
  }
  await recordStep(
    { requestId, name: 'get_image_info', host: null, details: `checking snapshot image ${imageId}` },
    () => images.getActiveImage({ imageId }),
  );
  const { shelved_image_os_hash_algo: osHashAlgo, shelved_image_os_hash_value: osHashValue } = instance.systemMetadata;
  return { kind: 'standalone', imageId, snapshot: osHashAlgo && osHashValue ? { osHashAlgo, osHashValue } : null };
}

async function spawnFromSnapshot(instance: Instance, requestId: string, input: UnshelveInput): Promise<Instance> {
  const { uuid: instanceUuid } = instance;
  const zone = targetZone(input, instance);
  const root = await rootDiskSource(instance, requestId);
  return placeAndSpawn(
    requestId,
    {
      instanceUuid,
      requestId,
      expectedTaskStates: [TaskState.UNSHELVING],
      // Unlike Nova (bug 1978573), the pin changes only once the request could be placed.
      changes: { taskState: TaskState.SPAWNING, requestedAvailabilityZone: zone },
      flavor: instance.flavor,
      availabilityZone: zone,
      requestedHost: input.host,
    },
    ({ destination, instance: spawning, compute }) =>
      recordStep(
        {
          requestId,
          name: 'compute_unshelve_instance',
          host: destination.host,
          details: `spawning on ${destination.host} from ${root.kind === 'volume' ? 'volume' : 'image'} ${root.kind === 'volume' ? root.volumeId : root.imageId}`,
        },
        async () => {
          const powerState = await compute(destination.host).spawnInstance({ instance: spawning, requestId, root });
          return saveActive({
            instanceUuid,
            requestId,
            expectedTaskState: TaskState.SPAWNING,
            powerState,
            launched: true,
            removeSystemMetadata: SHELVE_METADATA_KEYS,
          });
        },
      ),
    async (host, compute, error) => {
      // No half-built domain stays behind; the instance goes back to offloaded, image kept.
      await undoSpawn(host, compute, error, instanceUuid);
      await database.saveInstance({
        instanceUuid,
        requestId,
        expectedTaskStates: [TaskState.UNSHELVING, TaskState.SPAWNING],
        changes: {
          taskState: null,
          host: null,
          node: null,
          availabilityZone: null,
          powerState: PowerState.SHUTDOWN,
          requestedAvailabilityZone: instance.requestedAvailabilityZone,
        },
      });
    },
  );
}
