// In-memory stand-ins for the conductor's activities on PostgreSQL, Glance (./fake-glance.ts), the
// actions log and the reconciler's reads, for workflow tests without the stack. Writes to an
// instance follow the rules of lib/db/task-states.ts (a claim, then compare-and-swap on task_state
// by the request that holds it) and lib/db/reconciler.ts, and fail with the same failure types,
// which the workflows branch on.
import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import type { ActionLogActivities } from '../../activities/action-log.js';
import type { DatabaseActivities } from '../../activities/database.js';
import type { ImageActivities } from '../../activities/images.js';
import type { OrphanedSnapshot, ReconcilerActivities } from '../../activities/reconciler.js';
import type { ConductorSettings, SettingsActivities } from '../../activities/settings.js';
import { createTemporalActivities, type TemporalActivities } from '../../activities/temporal.js';
import type { GlanceImage } from '../../lib/glance.js';
import type { InstanceActionRecord } from '../../lib/db/instance-actions.js';
import type { StrandedClaim } from '../../lib/db/reconciler.js';
import type { ClaimRequest, SaveRequest } from '../../lib/db/task-states.js';
import {
  ALLOWED_VM_STATES,
  type BlockDeviceMapping,
  CLAIM_TASK_STATE,
  type Instance,
  PowerState,
  SHELVE_TASK_STATES,
  TaskState,
  VmState,
} from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';
import { type HostState, selectHost } from '../../lib/scheduler.js';
import { createFakeGlance, failure, SNAPSHOT_PROJECT } from './fake-glance.js';

/** An instance row: the instance, and the request and workflow that hold its claim. */
interface Row {
  instance: Instance;
  requestId: string | null;
  workflowId: string | null;
}

export type ConductorActivities = DatabaseActivities &
  ActionLogActivities &
  ImageActivities &
  SettingsActivities &
  TemporalActivities &
  ReconcilerActivities;

export interface FakeConductor {
  /** The activities, for the conductor's Worker. */
  activities: ConductorActivities;
  /** Records an ACTIVE, running instance on `host`, booted from a volume if asked; returns its uuid. */
  addInstance(host: string, options?: { volumeBacked?: boolean }): string;
  /** Records an active image the instances' project can boot from; returns its id. */
  addImage(): string;
  /** The instance as the API would read it now. */
  instance(instanceUuid: string): Instance;
  /** The actions log of an instance, oldest first. */
  actions(instanceUuid: string): InstanceActionRecord[];
  /** The images in the fake Glance, by id: snapshots, and those addImage recorded. */
  images: Map<string, GlanceImage>;
  /** What a compute host's snapshotInstance does: fills the queued image with a few bytes. */
  upload(imageId: string): UploadedSnapshot;
}

/** Whose addInstance's instances and addImage's images are. */
export const INSTANCE_OWNER = { projectId: 'p1', userId: 'u1' };

/** The statuses a shelve snapshot can be left in, as activities/reconciler.ts lists them. */
const SNAPSHOT_STATUSES: GlanceImage['status'][] = ['queued', 'saving', 'killed', 'active'];

/** One compute host with room for anything the tests build. */
function ampleHost(host: string): HostState {
  return {
    host,
    availabilityZone: 'nova',
    up: true,
    disabled: false,
    disabledReason: null,
    vcpus: 64,
    memoryMb: 64 * 1024,
    localGb: 100,
    cpuAllocationRatio: 4,
    ramAllocationRatio: 1,
    diskAllocationRatio: 1,
    vcpusUsed: 0,
    memoryMbUsed: 0,
    localGbUsed: 0,
  };
}

/** Why the claim is refused, as [attribute, value], or null: lib/db/task-states.ts's order. */
function claimRefusal(
  instance: Instance,
  allowed: readonly VmState[],
  action: ClaimRequest['action'],
  shelvedImageId: string | undefined,
): [string, string] | null {
  if (instance.taskState !== null) return ['task_state', instance.taskState];
  if (!allowed.includes(instance.vmState)) return ['vm_state', instance.vmState];
  if (instance.launchedAt === null && action !== 'delete') return ['launched_at', 'None'];
  if (shelvedImageId !== undefined && instance.systemMetadata.shelved_image_id !== shelvedImageId) {
    return ['shelved_image_id', instance.systemMetadata.shelved_image_id ?? 'None'];
  }
  return null;
}

/**
 * `hosts`: the compute hosts, all up, with room for anything; `settings`: the conductor's
 * configuration where a test needs other values (a short spawnStartTimeout, say).
 */
export function createFakeConductor(hosts: string[], settings: Partial<ConductorSettings> = {}): FakeConductor {
  const rows = new Map<string, Row>();
  const actions: InstanceActionRecord[] = [];
  const now = () => new Date().toISOString();
  const copy = (instance: Instance): Instance => structuredClone(instance);

  const rowOf = (instanceUuid: string): Row => {
    const row = rows.get(instanceUuid);
    if (!row || row.instance.vmState === VmState.DELETED) {
      throw failure('InstanceNotFound', `Instance ${instanceUuid} could not be found.`);
    }
    return row;
  };
  const actionOf = (requestId: string) => actions.find((action) => action.requestId === requestId);
  // Inside an activity the claimant is the workflow that runs it, as the real claim takes it.
  const currentWorkflowId = () => Context.current().info.workflowExecution?.workflowId ?? null;

  /** actionStart: the action's row, once per request; who asked defaults to the instance's owner. */
  function startAction(start: {
    action: string;
    instance: Instance;
    requestId: string;
    workflowId: string | null;
    userId?: string;
    projectId?: string;
  }): void {
    const { action, instance, requestId, workflowId } = start;
    if (actionOf(requestId)) return;
    actions.push({
      action,
      instanceUuid: instance.uuid,
      requestId,
      userId: start.userId ?? instance.userId,
      projectId: start.projectId ?? instance.projectId,
      startTime: now(),
      finishTime: null,
      message: null,
      reason: null,
      workflowId,
      events: [],
    });
  }

  /** saveChanges: only by the holding request, from an expected task_state or the one it sets. */
  function save(request: SaveRequest): Instance {
    const row = rowOf(request.instanceUuid);
    const accepted: (TaskState | null)[] = [...request.expectedTaskStates];
    if (request.changes.taskState !== undefined) accepted.push(request.changes.taskState);
    if (row.requestId !== request.requestId || !accepted.includes(row.instance.taskState)) {
      throw failure(
        'UnexpectedTaskState',
        `Instance ${request.instanceUuid} is in task_state ${row.instance.taskState ?? 'None'}, ` +
          `expected ${request.expectedTaskStates.map((state) => state ?? 'None').join(' or ')} for this request`,
      );
    }
    const { launched, ...changes } = request.changes;
    const defined = Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined));
    Object.assign(row.instance, defined, launched ? { launchedAt: now() } : {}, { updatedAt: now() });
    Object.assign(row.instance.systemMetadata, request.setSystemMetadata);
    for (const key of request.removeSystemMetadata ?? []) delete row.instance.systemMetadata[key];
    return copy(row.instance);
  }

  const database: DatabaseActivities = {
    async computeHostDown() {
      return null;
    },

    async claimInstance(claim: ClaimRequest) {
      const { instanceUuid, action, requestId, shelvedImageId } = claim;
      const row = rowOf(instanceUuid);
      const { instance } = row;
      const taskState = CLAIM_TASK_STATE[action];
      const workflowId = currentWorkflowId();
      const allowed: readonly VmState[] = ALLOWED_VM_STATES[action];
      const retry = row.requestId === requestId && instance.taskState === taskState && row.workflowId === workflowId;
      if (!retry) {
        const refusal = claimRefusal(instance, allowed, action, shelvedImageId);
        if (refusal) {
          const [attribute, value] = refusal;
          throw failure(
            attribute === 'task_state' ? 'UnexpectedTaskState' : 'InstanceInvalidState',
            `Cannot '${action}' instance ${instanceUuid} while it is in ${attribute} ${value}`,
          );
        }
        Object.assign(row, { requestId, workflowId });
        instance.taskState = taskState;
        if (action === 'shelve') instance.systemMetadata.image_base_image_ref = instance.imageRef;
      }
      startAction({ action, instance, requestId, workflowId, userId: claim.userId, projectId: claim.projectId });
      return copy(instance);
    },

    async saveInstance(request) {
      return save(request);
    },

    async releaseInstance({ instanceUuid, requestId, powerState }) {
      const row = rowOf(instanceUuid);
      if (row.requestId !== requestId) return;
      row.instance.taskState = null;
      if (powerState !== undefined) row.instance.powerState = powerState;
    },

    async markInstanceDeleted({ instanceUuid, requestId }) {
      save({
        instanceUuid,
        requestId,
        expectedTaskStates: [TaskState.DELETING],
        changes: { vmState: VmState.DELETED, taskState: null, powerState: PowerState.NOSTATE, host: null, node: null },
      });
    },

    async createInstance(request) {
      const { uuid, requestId } = request;
      const workflowId = currentWorkflowId();
      const existing = rows.get(uuid);
      // An existing row is this build's own (a retry) only while it still spawns for it.
      if (existing) {
        const own =
          existing.instance.taskState === TaskState.SPAWNING &&
          existing.requestId === requestId &&
          existing.workflowId === workflowId;
        if (!own) throw failure('InstanceExists', `Instance ${uuid} already exists.`);
        return copy(existing.instance);
      }
      const created = now();
      const instance: Instance = {
        uuid,
        displayName: request.displayName,
        projectId: request.projectId,
        userId: request.userId,
        host: null,
        node: null,
        availabilityZone: null,
        requestedAvailabilityZone: request.availabilityZone,
        vmState: VmState.BUILDING,
        taskState: TaskState.SPAWNING,
        powerState: PowerState.NOSTATE,
        imageRef: request.imageRef,
        flavor: request.flavor,
        launchedAt: null,
        createdAt: created,
        updatedAt: created,
        systemMetadata: { ...request.systemMetadata },
        blockDeviceMappings: structuredClone(request.blockDeviceMappings),
        // No networks here: its ports get no fixed IP (lib/db/networks.ts would draw one).
        ports: request.ports.map(({ id, network, macAddress }) => ({
          id,
          network,
          macAddress,
          fixedIp: null,
          bindingHost: null,
        })),
      };
      rows.set(uuid, { instance, requestId, workflowId });
      startAction({ action: 'create', instance, requestId, workflowId });
      return copy(instance);
    },

    async selectDestination(request) {
      const { host, availabilityZone } = selectHost(hosts.map(ampleHost), request);
      return { host, node: host, availabilityZone };
    },

    async placeInstance(request) {
      const destination = await database.selectDestination(request);
      const instance = save({
        instanceUuid: request.instanceUuid,
        requestId: request.requestId,
        expectedTaskStates: request.expectedTaskStates,
        changes: { ...request.changes, ...destination },
      });
      return { destination, instance };
    },
  };

  const actionLog: ActionLogActivities = {
    async startActionEvent({ requestId, event, host }) {
      const action = actionOf(requestId);
      if (!action) return;
      action.events = action.events.filter((recorded) => recorded.event !== event);
      action.events.push({ event, host, startTime: now(), finishTime: null, result: null, traceback: null });
    },

    async finishActionEvent({ requestId, event, result, traceback }) {
      const recorded = actionOf(requestId)?.events.find((candidate) => candidate.event === event);
      if (recorded) Object.assign(recorded, { finishTime: now(), result, traceback: traceback ?? null });
    },

    async finishAction({ requestId, result, reason }) {
      const action = actionOf(requestId);
      if (!action) return;
      Object.assign(action, {
        finishTime: now(),
        message: result === 'Success' ? null : result,
        reason: reason ?? null,
      });
      for (const open of action.events.filter((event) => event.finishTime === null)) {
        Object.assign(open, { finishTime: now(), result: 'Error', traceback: reason ?? result });
      }
    },
  };

  const glance = createFakeGlance();

  const conductorSettings: SettingsActivities = {
    async conductorSettings() {
      return { shutdownTimeout: 0, shelvedOffloadTime: -1, computeHostTimeout: 30, spawnStartTimeout: 30, ...settings };
    },
  };

  const live = () => [...rows.values()].filter(({ instance }) => instance.vmState !== VmState.DELETED);
  const inScope = (instanceUuid: string, instanceUuids: string[] | null) =>
    instanceUuids === null || instanceUuids.includes(instanceUuid);

  // lib/db/reconciler.ts's reads and compare-and-swap writes, and activities/reconciler.ts's listing.
  const reconciler: ReconcilerActivities = {
    async listClaims({ graceSeconds, instanceUuids }) {
      const cutoff = Date.now() - graceSeconds * 1000;
      return live()
        .filter(
          ({ instance, workflowId }) =>
            instance.taskState !== null &&
            workflowId !== null &&
            Date.parse(instance.updatedAt) < cutoff &&
            inScope(instance.uuid, instanceUuids),
        )
        .sort((a, b) => a.instance.updatedAt.localeCompare(b.instance.updatedAt))
        .map(({ instance, requestId, workflowId }): StrandedClaim => ({
          instanceUuid: instance.uuid,
          requestId: requestId!,
          workflowId: workflowId!,
          taskState: instance.taskState!,
          vmState: instance.vmState,
          host: instance.host,
        }));
    },

    async releaseClaim({ claim, vmState, powerState, offHost = false }) {
      const row = rows.get(claim.instanceUuid);
      const found =
        row?.requestId === claim.requestId &&
        row.workflowId === claim.workflowId &&
        row.instance.taskState === claim.taskState;
      if (!found) return false;
      Object.assign(
        row.instance,
        { taskState: null, updatedAt: now() },
        vmState === undefined ? {} : { vmState },
        powerState === undefined ? {} : { powerState },
        offHost ? { host: null, node: null, availabilityZone: null } : {},
      );
      return true;
    },

    async getInstance({ instanceUuid }) {
      return copy(rowOf(instanceUuid).instance);
    },

    async listUpHosts() {
      return [...hosts].sort();
    },

    async syncPowerStates({ host, powerStates, instanceUuids }) {
      let synced = 0;
      for (const { instance } of live()) {
        if (instance.host !== host || instance.taskState !== null || !inScope(instance.uuid, instanceUuids)) continue;
        const actual = powerStates[instance.uuid] ?? PowerState.NOSTATE;
        if (actual === instance.powerState) continue;
        Object.assign(instance, { powerState: actual, updatedAt: now() });
        synced += 1;
      }
      return synced;
    },

    async listOrphanedSnapshots({ graceSeconds, instanceUuids }) {
      const cutoff = Date.now() - graceSeconds * 1000;
      const needed = (imageId: string, instanceUuid: string) =>
        live().some(
          ({ instance }) =>
            instance.systemMetadata.shelved_image_id === imageId ||
            (instance.uuid === instanceUuid &&
              instance.taskState !== null &&
              SHELVE_TASK_STATES.includes(instance.taskState)),
        );
      const orphaned: OrphanedSnapshot[] = [];
      for (const image of glance.images.values()) {
        const instanceUuid = image.instance_uuid;
        const candidate =
          image.owner === SNAPSHOT_PROJECT &&
          image.image_type === 'snapshot' &&
          SNAPSHOT_STATUSES.includes(image.status) &&
          typeof instanceUuid === 'string' &&
          inScope(instanceUuid, instanceUuids) &&
          Date.parse(String(image.created_at)) <= cutoff;
        if (candidate && !needed(image.id, instanceUuid)) {
          orphaned.push({ imageId: image.id, instanceUuid, status: image.status });
        }
      }
      return orphaned;
    },
  };

  return {
    // Temporal itself is there (the test environment's server): its activities are the real ones.
    activities: {
      ...database,
      ...actionLog,
      ...glance.activities,
      ...conductorSettings,
      ...createTemporalActivities(),
      ...reconciler,
    },

    addInstance(host, { volumeBacked = false } = {}) {
      const uuid = randomUUID();
      const created = now();
      const rootVolume: BlockDeviceMapping = {
        bootIndex: 0,
        sourceType: 'image',
        destinationType: 'volume',
        imageId: randomUUID(),
        volumeId: randomUUID(),
        volumeSizeGb: 1,
        deviceName: 'vda',
      };
      rows.set(uuid, {
        requestId: null,
        workflowId: null,
        instance: {
          uuid,
          displayName: 'vm',
          ...INSTANCE_OWNER,
          host,
          node: host,
          availabilityZone: 'nova',
          requestedAvailabilityZone: null,
          vmState: VmState.ACTIVE,
          taskState: null,
          powerState: PowerState.RUNNING,
          // As Nova: a volume-backed instance has no image of its own.
          imageRef: volumeBacked ? '' : randomUUID(),
          flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
          launchedAt: created,
          createdAt: created,
          updatedAt: created,
          systemMetadata: {},
          blockDeviceMappings: volumeBacked ? [rootVolume] : [],
          ports: [],
        },
      });
      return uuid;
    },

    addImage: () => glance.addImage(INSTANCE_OWNER.projectId),

    instance: (instanceUuid) => copy(rowOf(instanceUuid).instance),

    actions: (instanceUuid) => actions.filter((action) => action.instanceUuid === instanceUuid),

    images: glance.images,

    upload: glance.upload,
  };
}
