// Nova's os-services for compute hosts: listed with their state, disabled with a reason, enabled,
// forced down; by uuid from microversion 2.53, by host before; bad bodies refused naming why.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeHostDownReason, listUpComputeHosts, reportComputeNode } from '../../lib/db/compute-services.js';
import { selectDestination } from '../../lib/db/placement.js';
import { buildApi } from '../../api/server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const admin = 'admin:admin-project';

describe('os-services', () => {
  let stack: TestStack;
  let api: FastifyInstance;
  const host = `svc-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    stack = await startTestStack();
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    await reportComputeNode(stack.pool, {
      host,
      availabilityZone: 'svc-zone',
      hypervisorType: 'qemu',
      vcpus: 2,
      memoryMb: 1024,
      localGb: 10,
      cpuAllocationRatio: 1,
      ramAllocationRatio: 1,
      diskAllocationRatio: 1,
    });
  });

  afterAll(async () => {
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = $1', [host]);
    await api?.close();
    await stack?.stop();
  });

  const call = (method: 'GET' | 'PUT', url: string, version: string, body?: unknown) =>
    api.inject({
      method,
      url,
      headers: {
        'x-auth-token': admin,
        'openstack-api-version': `compute ${version}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });

  async function service(version = '2.53') {
    const response = await call('GET', `/v2.1/os-services?host=${host}`, version);
    expect(response.statusCode).toBe(200);
    const { services } = response.json();
    expect(services).toHaveLength(1);
    return services[0];
  }

  it('lists a host as Nova shows its nova-compute service', async () => {
    expect(await service()).toMatchObject({
      binary: 'nova-compute',
      host,
      zone: 'svc-zone',
      status: 'enabled',
      state: 'up',
      disabled_reason: null,
      forced_down: false,
    });
    expect((await service('2.10')).forced_down).toBeUndefined();
    const other = await call('GET', `/v2.1/os-services?binary=nova-scheduler`, '2.53');
    expect(other.json()).toEqual({ services: [] });
  });

  it('disables with a reason, enables, and forces down by uuid (2.53)', async () => {
    const { id } = await service();
    const disable = await call('PUT', `/v2.1/os-services/${id}`, '2.53', {
      status: 'disabled',
      disabled_reason: 'maintenance',
    });
    expect(disable.statusCode).toBe(200);
    expect(disable.json().service).toMatchObject({ id, status: 'disabled', disabled_reason: 'maintenance' });

    const down = await call('PUT', `/v2.1/os-services/${id}`, '2.53', { forced_down: true });
    expect(down.json().service).toMatchObject({ state: 'down', forced_down: true, disabled_reason: 'maintenance' });

    const enable = await call('PUT', `/v2.1/os-services/${id}`, '2.53', { status: 'enabled', forced_down: false });
    expect(enable.json().service).toMatchObject({
      status: 'enabled',
      state: 'up',
      forced_down: false,
      disabled_reason: null,
    });
  });

  it('makes a forced-down host down everywhere: the scheduler, the host-down check, the reconciler', async () => {
    const { id } = await service();
    const placeOnHost = () =>
      selectDestination(stack.pool, {
        instanceUuid: randomUUID(),
        flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
        availabilityZone: null,
        requestedHost: host,
      });
    await call('PUT', `/v2.1/os-services/${id}`, '2.53', { forced_down: true });
    try {
      await expect(placeOnHost()).rejects.toMatchObject({ type: 'NoValidHost' });
      expect(await computeHostDownReason(stack.pool, host)).toBe(`host ${host} is forced down`);
      expect(await listUpComputeHosts(stack.pool)).not.toContain(host);
    } finally {
      await call('PUT', `/v2.1/os-services/${id}`, '2.53', { forced_down: false });
    }
    expect(await placeOnHost()).toMatchObject({ host });
    expect(await computeHostDownReason(stack.pool, host)).toBeNull();
    expect(await listUpComputeHosts(stack.pool)).toContain(host);
  });

  it('takes the actions of microversions before 2.53, by host', async () => {
    const disable = await call('PUT', '/v2.1/os-services/disable-log-reason', '2.1', {
      host,
      binary: 'nova-compute',
      disabled_reason: 'moving racks',
    });
    expect(disable.statusCode).toBe(200);
    expect(disable.json().service).toEqual({
      host,
      binary: 'nova-compute',
      status: 'disabled',
      disabled_reason: 'moving racks',
    });
    const enable = await call('PUT', '/v2.1/os-services/enable', '2.1', { host, binary: 'nova-compute' });
    expect(enable.json().service).toEqual({ host, binary: 'nova-compute', status: 'enabled' });
    expect((await service()).status).toBe('enabled');
  });

  it('refuses bad bodies and unknown services, naming the problem, and changes nothing', async () => {
    const { id } = await service();
    const refusals: [string, string, unknown, number, string][] = [
      [id, '2.53', {}, 400, "No updates were requested. Fields 'status' or 'forced_down' should be specified."],
      [id, '2.53', { status: 'off' }, 400, "status: it must be 'enabled' or 'disabled'"],
      [id, '2.53', { status: 'enabled', disabled_reason: 'x' }, 400, 'unless disabling the service'],
      [id, '2.53', { status: 'disabled', disabled_reason: 'x'.repeat(256) }, 400, 'disabled_reason'],
      [id, '2.53', { forced_down: 'yes' }, 400, 'forced_down: it must be a boolean'],
      [id, '2.53', { status: 'disabled', host }, 400, 'additional properties are not allowed (host)'],
      [id, '2.53', [], 400, 'expected a JSON object'],
      [randomUUID(), '2.53', { status: 'disabled' }, 404, 'could not be found'],
      ['not-a-uuid', '2.53', { status: 'disabled' }, 404, 'could not be found'],
      ['force-down', '2.10', { host, binary: 'nova-compute' }, 404, 'Unknown action force-down'],
      ['disable', '2.1', { host: 'no-such-host', binary: 'nova-compute' }, 404, 'no-such-host'],
      ['disable', '2.1', { host, binary: 'nova-conductor' }, 400, "'binary' ('nova-compute')"],
    ];
    for (const [target, version, body, status, message] of refusals) {
      const response = await call('PUT', `/v2.1/os-services/${target}`, version, body);
      expect(response.statusCode, JSON.stringify(body)).toBe(status);
      expect(JSON.stringify(response.json())).toContain(message);
    }
    expect(await service()).toMatchObject({ status: 'enabled', forced_down: false, disabled_reason: null });
  });

  it('is for admins only', async () => {
    const response = await api.inject({
      method: 'GET',
      url: '/v2.1/os-services',
      headers: { 'x-auth-token': 'user:project' },
    });
    expect(response.statusCode).toBe(403);
    expect(response.json().forbidden.message).toBe(
      "Policy doesn't allow os_compute_api:os-services:list to be performed.",
    );
  });
});
