// Picks the host an instance is spawned on, as Nova's filter scheduler does in short: drop the
// hosts that are down, disabled, already tried, outside the requested availability zone, or too
// full for the flavor; then prefer the one with the most free memory. Pure: the database activity
// feeds it host states.
import { ApplicationFailure } from '@temporalio/common';
import type { Flavor } from './nova.js';

/** What a compute host offers, as it reports it. */
export interface HostCapacity {
  vcpus: number;
  memoryMb: number;
  localGb: number;
  /** Overcommit the host allows (Nova's allocation ratios). */
  cpuAllocationRatio: number;
  ramAllocationRatio: number;
  diskAllocationRatio: number;
}

export interface HostState extends HostCapacity {
  host: string;
  availabilityZone: string;
  /** Reported within the service-down window, and not forced down by an admin. */
  up: boolean;
  /** Disabled by an admin (os-services): keeps its instances, takes no new ones. */
  disabled: boolean;
  disabledReason: string | null;
  /** What the instances placed on the host already take (offloaded ones take nothing). */
  vcpusUsed: number;
  memoryMbUsed: number;
  localGbUsed: number;
}

export interface RequestSpec {
  flavor: Flavor;
  /** The zone the instance must land in; null for anywhere. */
  availabilityZone: string | null;
  /** A host the request names (Nova 2.91); it must exist, be up, fit and be in the zone. */
  requestedHost?: string | null;
  /** Hosts an earlier try of this request could not use (Nova's alternates): never chosen again. */
  excludedHosts?: readonly string[];
}

function failure(type: string, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

/** Why the host cannot take the flavor, or null when it can. */
function misfit(host: HostState, flavor: Flavor, excludedHosts: readonly string[]): string | null {
  const free = {
    vcpus: host.vcpus * host.cpuAllocationRatio - host.vcpusUsed,
    memoryMb: host.memoryMb * host.ramAllocationRatio - host.memoryMbUsed,
    localGb: host.localGb * host.diskAllocationRatio - host.localGbUsed,
  };
  const diskGb = flavor.rootGb + flavor.ephemeralGb + flavor.swap / 1024;
  if (!host.up) return 'down';
  if (host.disabled) return `disabled${host.disabledReason ? ` (${host.disabledReason})` : ''}`;
  if (excludedHosts.includes(host.host)) return 'already tried for this request';
  if (free.vcpus < flavor.vcpus) return `${free.vcpus} free vCPUs, ${flavor.vcpus} needed`;
  if (free.memoryMb < flavor.memoryMb) return `${free.memoryMb} MiB free memory, ${flavor.memoryMb} MiB needed`;
  if (free.localGb < diskGb) return `${free.localGb} GiB free disk, ${diskGb} GiB needed`;
  return null;
}

export function selectHost(hosts: readonly HostState[], spec: RequestSpec): HostState {
  const { availabilityZone: zone, requestedHost, flavor, excludedHosts = [] } = spec;
  if (zone !== null && !hosts.some((host) => host.availabilityZone === zone && host.up)) {
    throw failure('InvalidRequest', `The requested availability zone is not available: ${zone}`);
  }
  let candidates = zone === null ? hosts : hosts.filter((host) => host.availabilityZone === zone);
  if (requestedHost) {
    const named = hosts.find((host) => host.host === requestedHost);
    if (!named) throw failure('ComputeHostNotFound', `Compute host ${requestedHost} could not be found.`);
    if (zone !== null && named.availabilityZone !== zone) {
      throw failure('UnshelveHostNotInAZ', `Host "${requestedHost}" is not in the availability zone "${zone}".`);
    }
    candidates = [named];
  }
  const reasons: string[] = [];
  const fitting = candidates.filter((host) => {
    const reason = misfit(host, flavor, excludedHosts);
    if (reason) reasons.push(`${host.host}: ${reason}`);
    return reason === null;
  });
  if (fitting.length === 0) {
    throw failure(
      'NoValidHost',
      `No valid host was found for flavor ${flavor.name}${zone ? ` in availability zone ${zone}` : ''}: ` +
        (reasons.length > 0 ? reasons.join('; ') : 'no compute host is registered'),
    );
  }
  const freeMemory = (host: HostState) => host.memoryMb * host.ramAllocationRatio - host.memoryMbUsed;
  return [...fitting].sort((a, b) => freeMemory(b) - freeMemory(a) || a.host.localeCompare(b.host))[0]!;
}

/**
 * The zone an unshelve schedules in (docs/nova-behaviour.md §5.2): the one the request names when it names one
 * (null unpins), else the one the instance is pinned to.
 */
export function targetZone(
  request: { availabilityZone?: string | null },
  instance: { requestedAvailabilityZone: string | null },
): string | null {
  return 'availabilityZone' in request ? (request.availabilityZone ?? null) : instance.requestedAvailabilityZone;
}
