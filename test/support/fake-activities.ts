// In-memory stand-ins for the conductor's activities on PostgreSQL, Glance (./fake-glance.ts) and
// the actions log, for workflow tests without the stack. Writes to an instance follow the rules of
// lib/db/task-states.ts (a claim, then compare-and-swap on task_state by the request that holds
// it) and fail with the same failure types, which the workflows branch on.
import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import type { ActionLogActivities } from '../../activities/action-log.js';
import type { DatabaseActivities } from '../../activities/database.js';
import type { ImageActivities } from '../../activities/images.js';
import type { SettingsActivities } from '../../activities/settings.js';
import { createTemporalActivities, type TemporalActivities } from '../../activities/temporal.js';
import type { GlanceImage } from '../../lib/glance.js';
import type { InstanceActionRecord } from '../../lib/db/instance-actions.js';
import type { ClaimRequest, SaveRequest } from '../../lib/db/task-states.js';
import { ALLOWED_VM_STATES, CLAIM_TASK_STATE, type Instance, PowerState, TaskState, VmState } from '../../lib/nova.js';
import type { UploadedSnapshot } from '../../lib/progress.js';
import { type HostState, selectHost } from '../../lib/scheduler.js';
import { createFakeGlance, failure } from './fake-glance.js';

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
  TemporalActivities;

export interface FakeConductor {
  /** The activities, for the conductor's Worker. */
  activities: ConductorActivities;
  /** Records an ACTIVE, running instance on `host`; returns its uuid. */
  addInstance(host: string): string;
  /** The instance as the API would read it now. */
  instance(instanceUuid: string): Instance;
  /** The actions log of an instance, oldest first. */
  actions(instanceUuid: string): InstanceActionRecord[];
  /** Snapshot images in the fake Glance, by id. */
  images: Map<string, GlanceImage>;
  /** What a compute host's snapshotInstance does: fills the queued image with a few bytes. */
  upload(imageId: string): UploadedSnapshot;
}

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

export function createFakeConductor(hosts: string[]): FakeConductor {
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
      if (!actionOf(requestId)) {
        actions.push({
          action,
          instanceUuid,
          requestId,
          userId: claim.userId ?? instance.userId,
          projectId: claim.projectId ?? instance.projectId,
          startTime: now(),
          finishTime: null,
          message: null,
          reason: null,
          workflowId,
          events: [],
        });
      }
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

    async createInstance() {
      throw failure('NotFaked', 'the fake conductor records instances with addInstance, not a build');
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
      return { shutdownTimeout: 0, shelvedOffloadTime: -1, computeHostTimeout: 30, spawnStartTimeout: 30 };
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
    },

    addInstance(host) {
      const uuid = randomUUID();
      const created = now();
      rows.set(uuid, {
        requestId: null,
        workflowId: null,
        instance: {
          uuid,
          displayName: 'vm',
          projectId: 'p1',
          userId: 'u1',
          host,
          node: host,
          availabilityZone: 'nova',
          requestedAvailabilityZone: null,
          vmState: VmState.ACTIVE,
          taskState: null,
          powerState: PowerState.RUNNING,
          imageRef: randomUUID(),
          flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
          launchedAt: created,
          createdAt: created,
          updatedAt: created,
          systemMetadata: {},
          blockDeviceMappings: [],
          ports: [],
        },
      });
      return uuid;
    },

    instance: (instanceUuid) => copy(rowOf(instanceUuid).instance),

    actions: (instanceUuid) => actions.filter((action) => action.instanceUuid === instanceUuid),

    images: glance.images,

    upload: glance.upload,
  };
}
