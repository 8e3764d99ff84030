import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { type HostState, selectHost } from '../../lib/scheduler.js';

const flavor = { flavorid: '1', name: 'm1.small', vcpus: 2, memoryMb: 2048, rootGb: 20, ephemeralGb: 0, swap: 0 };

function host(name: string, changes: Partial<HostState> = {}): HostState {
  return {
    host: name,
    availabilityZone: 'az1',
    up: true,
    disabled: false,
    disabledReason: null,
    vcpus: 4,
    memoryMb: 8192,
    localGb: 100,
    cpuAllocationRatio: 1,
    ramAllocationRatio: 1,
    diskAllocationRatio: 1,
    vcpusUsed: 0,
    memoryMbUsed: 0,
    localGbUsed: 0,
    ...changes,
  };
}

function refusal(run: () => unknown): ApplicationFailure {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ApplicationFailure);
    expect((error as ApplicationFailure).nonRetryable).toBe(true);
    return error as ApplicationFailure;
  }
  return expect.unreachable('selectHost should have refused');
}

describe('selectHost', () => {
  it('prefers the host with the most free memory, by name on a tie', () => {
    const hosts = [host('a', { memoryMbUsed: 4096 }), host('b'), host('c')];
    expect(selectHost(hosts, { flavor, availabilityZone: null }).host).toBe('b');
  });

  it('keeps to the requested zone, and refuses a zone with no host up', () => {
    const hosts = [
      host('a'),
      host('b', { availabilityZone: 'az2', memoryMbUsed: 4096 }),
      host('c', { availabilityZone: 'az3', up: false }),
    ];
    expect(selectHost(hosts, { flavor, availabilityZone: 'az2' }).host).toBe('b');
    expect(refusal(() => selectHost(hosts, { flavor, availabilityZone: 'az3' }))).toMatchObject({
      type: 'InvalidRequest',
      message: 'The requested availability zone is not available: az3',
    });
  });

  it('takes a named host only if it exists and is in the zone', () => {
    const hosts = [host('a'), host('b', { availabilityZone: 'az2' })];
    expect(selectHost(hosts, { flavor, availabilityZone: null, requestedHost: 'b' }).host).toBe('b');
    expect(refusal(() => selectHost(hosts, { flavor, availabilityZone: null, requestedHost: 'x' }))).toMatchObject({
      type: 'ComputeHostNotFound',
      message: 'Compute host x could not be found.',
    });
    expect(refusal(() => selectHost(hosts, { flavor, availabilityZone: 'az1', requestedHost: 'b' }))).toMatchObject({
      type: 'UnshelveHostNotInAZ',
      message: 'Host "b" is not in the availability zone "az1".',
    });
  });

  it('says why each host cannot take the flavor', () => {
    const hosts = [
      host('down', { up: false }),
      host('cpu', { vcpusUsed: 3 }),
      host('ram', { memoryMbUsed: 7000 }),
      host('disk', { localGbUsed: 90 }),
    ];
    expect(refusal(() => selectHost(hosts, { flavor, availabilityZone: null })).message).toBe(
      'No valid host was found for flavor m1.small: down: down; cpu: 1 free vCPUs, 2 needed; ' +
        'ram: 1192 MiB free memory, 2048 MiB needed; disk: 10 GiB free disk, 20 GiB needed',
    );
    expect(refusal(() => selectHost([], { flavor, availabilityZone: null })).type).toBe('NoValidHost');
  });

  it('never chooses a disabled host or one this request already tried', () => {
    const hosts = [host('a'), host('b', { disabled: true, disabledReason: 'maintenance' }), host('c')];
    expect(selectHost(hosts, { flavor, availabilityZone: null, excludedHosts: ['a'] }).host).toBe('c');
    expect(
      refusal(() => selectHost(hosts, { flavor, availabilityZone: null, excludedHosts: ['a', 'c'] })).message,
    ).toBe(
      'No valid host was found for flavor m1.small: a: already tried for this request; b: disabled (maintenance); ' +
        'c: already tried for this request',
    );
    expect(refusal(() => selectHost(hosts, { flavor, availabilityZone: null, requestedHost: 'b' })).type).toBe(
      'NoValidHost',
    );
  });

  it('counts capacity through the allocation ratios', () => {
    expect(
      selectHost([host('a', { vcpusUsed: 7, cpuAllocationRatio: 4 })], { flavor, availabilityZone: null }).host,
    ).toBe('a');
  });
});
