// Nova's JSON views of servers and instance actions.
import type { InstanceActionRecord } from '../lib/db/instance-actions.js';
import { domainName } from '../lib/libvirt.js';
import { type Instance, serverStatus } from '../lib/nova.js';
import type { RequestContext } from './context.js';
import type { ActionProgress } from './progress.js';

/** Nova's timestamps: UTC, no fraction, Z. */
function timestamp(iso: string | null): string | null {
  return iso === null ? null : iso.replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The ports' fixed IPs by network name, as Nova shows them; a port recorded before networks were
 * has none to show.
 */
function serverAddresses(instance: Instance) {
  const addresses: Record<string, object[]> = {};
  for (const port of instance.ports) {
    if (!port.fixedIp) continue;
    (addresses[port.network] ??= []).push({
      addr: port.fixedIp.address,
      version: 4,
      'OS-EXT-IPS:type': 'fixed',
      'OS-EXT-IPS-MAC:mac_addr': port.macAddress,
    });
  }
  return addresses;
}

export function serverView(instance: Instance, context: RequestContext, baseUrl: string) {
  const self = `${baseUrl}/v2.1/servers/${instance.uuid}`;
  return {
    id: instance.uuid,
    name: instance.displayName,
    status: serverStatus(instance.vmState),
    tenant_id: instance.projectId,
    user_id: instance.userId,
    // Volume-backed servers have no image of their own.
    image: instance.imageRef ? { id: instance.imageRef } : '',
    flavor: {
      vcpus: instance.flavor.vcpus,
      ram: instance.flavor.memoryMb,
      disk: instance.flavor.rootGb,
      ephemeral: instance.flavor.ephemeralGb,
      swap: instance.flavor.swap,
      original_name: instance.flavor.name,
      extra_specs: {},
    },
    created: timestamp(instance.createdAt),
    updated: timestamp(instance.updatedAt),
    addresses: serverAddresses(instance),
    metadata: {},
    links: [{ rel: 'self', href: self }],
    'OS-EXT-STS:vm_state': instance.vmState,
    'OS-EXT-STS:task_state': instance.taskState,
    'OS-EXT-STS:power_state': instance.powerState,
    'OS-EXT-AZ:availability_zone': instance.availabilityZone ?? '',
    'OS-SRV-USG:launched_at': timestamp(instance.launchedAt),
    'os-extended-volumes:volumes_attached': instance.blockDeviceMappings
      .filter((bdm) => bdm.volumeId)
      .map((bdm) => ({ id: bdm.volumeId, delete_on_termination: false })),
    // Where a server runs is for admins only, as in Nova.
    ...(context.isAdmin
      ? {
          'OS-EXT-SRV-ATTR:host': instance.host,
          'OS-EXT-SRV-ATTR:hypervisor_hostname': instance.node,
          'OS-EXT-SRV-ATTR:instance_name': domainName(instance.uuid),
        }
      : {}),
  };
}

/**
 * A failed event's message, as Nova's `details` (2.84) gives it to the server's owner: the first
 * line of the failure recorded in its traceback, without the error's class name.
 */
function eventDetails(event: InstanceActionRecord['events'][number]): string | null {
  if (event.result !== 'Error' || !event.traceback) return null;
  const first = event.traceback.split('\n', 1)[0]!;
  return first.replace(/^[\w.]+: /, '');
}

/**
 * Nova's instance action; with its events (one action's view), Nova 2.84's event `details` when
 * `details`, and vm-shelve's `progress` when given: the running action's current step and bytes
 * moved, null once it has finished.
 */
export function actionView(
  action: InstanceActionRecord,
  context: RequestContext,
  withEvents: boolean,
  { details = false, progress }: { details?: boolean; progress?: ActionProgress | null } = {},
) {
  return {
    action: action.action,
    instance_uuid: action.instanceUuid,
    request_id: action.requestId,
    user_id: action.userId,
    project_id: action.projectId,
    start_time: timestamp(action.startTime),
    updated_at: timestamp(action.finishTime ?? action.startTime),
    message: action.message,
    // vm-shelve's own: why it ended so (who cancelled it, what the reconciler found), for admins.
    ...(context.isAdmin ? { reason: action.reason } : {}),
    ...(withEvents
      ? {
          events: action.events.map((event) => ({
            event: event.event,
            start_time: timestamp(event.startTime),
            finish_time: timestamp(event.finishTime),
            result: event.result,
            ...(details ? { details: eventDetails(event) } : {}),
            // Tracebacks and hosts are for admins only, as in Nova.
            ...(context.isAdmin ? { traceback: event.traceback, host: event.host } : {}),
          })),
        }
      : {}),
    ...(progress !== undefined
      ? {
          progress: progress && {
            step: progress.step,
            bytes_done: progress.bytesDone,
            bytes_total: progress.bytesTotal,
            running: progress.running,
          },
        }
      : {}),
  };
}
