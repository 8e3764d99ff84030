// The HTTP API on the real stack (Temporal, PostgreSQL, Glance) with a stub compute host.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import type { Instance } from '../../lib/nova.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const owner = `${testOwner.userId}:${testOwner.projectId}`;
const admin = 'admin:admin-project';
const stranger = 'someone:other-project';

describe('the compute API', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  const zone = `az-api-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    // Shelve leaves servers SHELVED, so that offload is an action of its own.
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1' });
    stub = await startStubHost(stack, {}, { availabilityZone: zone });
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  function call(method: 'GET' | 'POST', url: string, token?: string, body?: unknown, version?: string) {
    return api.inject({
      method,
      url,
      headers: {
        ...(token ? { 'x-auth-token': token } : {}),
        ...(version ? { 'openstack-api-version': `compute ${version}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });
  }

  /** Runs an action through the API and waits for its workflow to end. */
  async function act(id: string, body: unknown, token = owner, version?: string): Promise<Instance> {
    const response = await call('POST', `/v2.1/servers/${id}/action`, token, body, version);
    expect(response.statusCode, response.body).toBe(202);
    expect(response.body).toBe('');
    const action = Object.keys(body as object)[0] as 'shelve' | 'shelveOffload' | 'unshelve';
    return (await stack.client.workflow.getHandle(workflowId(action, id)).result()) as Instance;
  }

  it('answers version discovery without a token', async () => {
    const root = await call('GET', '/');
    expect(root.statusCode).toBe(200);
    expect(root.json().versions[0]).toMatchObject({
      id: 'v2.1',
      status: 'CURRENT',
      min_version: '2.1',
      version: '2.93',
    });
    expect((await call('GET', '/v2.1')).json().version).toMatchObject({ id: 'v2.1' });
  });

  it('refuses requests without a valid token, in Nova shape', async () => {
    for (const token of [undefined, 'no-colon', 'a:b:c']) {
      const response = await call('GET', `/v2.1/servers/${randomUUID()}`, token);
      expect(response.statusCode).toBe(401);
      expect(response.json().unauthorized.code).toBe(401);
    }
  });

  it('shows a server to its project and to admins only; the host to admins only', async () => {
    const { uuid } = await stub.buildInstance();
    const mine = await call('GET', `/v2.1/servers/${uuid}`, owner);
    expect(mine.statusCode).toBe(200);
    expect(mine.json().server).toMatchObject({
      id: uuid,
      status: 'ACTIVE',
      'OS-EXT-STS:vm_state': 'active',
      'OS-EXT-STS:task_state': null,
      'OS-EXT-STS:power_state': 1,
    });
    expect(mine.json().server).not.toHaveProperty('OS-EXT-SRV-ATTR:host');
    expect((await call('GET', `/v2.1/servers/${uuid}`, admin)).json().server['OS-EXT-SRV-ATTR:host']).toBe(stub.host);
    const theirs = await call('GET', `/v2.1/servers/${uuid}`, stranger);
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json()).toEqual({ itemNotFound: { code: 404, message: `Instance ${uuid} could not be found.` } });
    expect((await call('GET', '/v2.1/servers/not-a-uuid', owner)).statusCode).toBe(404);
    const listed = (await call('GET', '/v2.1/servers/detail', stranger)).json().servers;
    expect(listed.map((server: { id: string }) => server.id)).not.toContain(uuid);
  });

  it('shelves, offloads (admin only) and unshelves, with states, actions and events to read', async () => {
    const { uuid } = await stub.buildInstance();
    const shelved = await act(uuid, { shelve: null });
    expect(shelved.vmState).toBe('shelved');
    expect((await call('GET', `/v2.1/servers/${uuid}`, owner)).json().server.status).toBe('SHELVED');

    const refused = await call('POST', `/v2.1/servers/${uuid}/action`, owner, { shelveOffload: null });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().forbidden.message).toBe(
      "Policy doesn't allow os_compute_api:os-shelve:shelve_offload to be performed.",
    );
    await act(uuid, { shelveOffload: null }, admin);
    expect((await call('GET', `/v2.1/servers/${uuid}`, owner)).json().server.status).toBe('SHELVED_OFFLOADED');

    const unshelved = await act(uuid, { unshelve: null });
    expect(unshelved).toMatchObject({ vmState: 'active', host: stub.host });

    const actions = (await call('GET', `/v2.1/servers/${uuid}/os-instance-actions`, owner)).json().instanceActions;
    expect(actions.map((action: { action: string }) => action.action)).toEqual([
      'unshelve',
      'shelveOffload',
      'shelve',
      'create',
    ]);
    const offload = actions[1];
    expect(offload).toMatchObject({ user_id: 'admin', project_id: 'admin-project', message: null });
    const detail = await call('GET', `/v2.1/servers/${uuid}/os-instance-actions/${offload.request_id}`, owner);
    expect(detail.json().instanceAction.events).toEqual([
      expect.objectContaining({ event: 'compute_shelve_offload_instance', result: 'Success' }),
    ]);
    expect(detail.json().instanceAction.events[0]).not.toHaveProperty('traceback');
    const asAdmin = await call('GET', `/v2.1/servers/${uuid}/os-instance-actions/${offload.request_id}`, admin);
    expect(asAdmin.json().instanceAction.events[0]).toHaveProperty('traceback', null);
  });

  it('serves Prometheus metrics to admins: actions by result, step durations', async () => {
    // A shelve, offload and unshelve of its own, run by this process's workers, for the counters to show.
    const { uuid } = await stub.buildInstance();
    await act(uuid, { shelve: null });
    await act(uuid, { shelveOffload: null }, admin);
    await act(uuid, { unshelve: null });

    expect((await call('GET', '/metrics', owner)).statusCode).toBe(403);
    const metrics = await call('GET', '/metrics', admin);
    expect(metrics.statusCode).toBe(200);
    expect(metrics.headers['content-type']).toContain('text/plain');
    for (const action of ['shelve', 'shelveOffload', 'unshelve']) {
      expect(metrics.body).toMatch(new RegExp(`vm_shelve_actions_started_total\\{action="${action}"\\} [1-9]`));
      expect(metrics.body).toMatch(
        new RegExp(`vm_shelve_actions_finished_total\\{action="${action}",result="Success"\\} [1-9]`),
      );
    }
    expect(metrics.body).toMatch(
      /vm_shelve_step_duration_seconds_count\{event="compute_shelve_offload_instance",result="Success"\} [1-9]/,
    );
  });

  it('answers 202 with the request id that names the action', async () => {
    const { uuid } = await stub.buildInstance();
    const response = await call('POST', `/v2.1/servers/${uuid}/action`, owner, { shelve: null });
    expect(response.statusCode).toBe(202);
    const requestId = response.headers['x-openstack-request-id'];
    expect(requestId).toMatch(/^req-[0-9a-f-]{36}$/);
    await stack.client.workflow.getHandle(workflowId('shelve', uuid)).result();
    const actions = (await call('GET', `/v2.1/servers/${uuid}/os-instance-actions`, owner)).json().instanceActions;
    expect(actions[0]).toMatchObject({ action: 'shelve', request_id: requestId });
  });

  it('gives 409 naming the state, and changes nothing', async () => {
    const { uuid } = await stub.buildInstance();
    const response = await call('POST', `/v2.1/servers/${uuid}/action`, owner, { unshelve: null });
    expect(response.statusCode).toBe(409);
    expect(response.json()).toEqual({
      conflictingRequest: {
        code: 409,
        message: `Cannot 'unshelve' instance ${uuid} while it is in vm_state active`,
      },
    });
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null });
  });

  it('unshelves to a named host (2.91, admin) and in a zone (2.77)', async () => {
    const { uuid } = await stub.buildInstance();
    await act(uuid, { shelve: null });
    await act(uuid, { shelveOffload: null }, admin);
    const toHost = await call('POST', `/v2.1/servers/${uuid}/action`, owner, { unshelve: { host: stub.host } }, '2.91');
    expect(toHost.statusCode).toBe(403);
    expect(await act(uuid, { unshelve: { host: stub.host } }, admin, '2.91')).toMatchObject({ host: stub.host });

    await act(uuid, { shelve: null });
    await act(uuid, { shelveOffload: null }, admin);
    const nowhere = await call(
      'POST',
      `/v2.1/servers/${uuid}/action`,
      owner,
      { unshelve: { availability_zone: 'nowhere' } },
      '2.77',
    );
    expect(nowhere.statusCode).toBe(400);
    expect(nowhere.json().badRequest.message).toBe('The requested availability zone is not available: nowhere');
    expect(await act(uuid, { unshelve: { availability_zone: zone } }, owner, '2.77')).toMatchObject({
      host: stub.host,
      requestedAvailabilityZone: zone,
    });
  });

  it.each([
    [
      '2.77',
      { unshelve: {} },
      "Invalid input for field/attribute unshelve: must have required property 'availability_zone'.",
    ],
    [
      '2.77',
      { unshelve: { availability_zone: null } },
      'Invalid input for field/attribute unshelve.availability_zone: must be string.',
    ],
    [
      '2.77',
      { unshelve: { availability_zone: 'a', host: 'h' } },
      "Invalid input for field/attribute unshelve: must NOT have additional properties ('host' was unexpected).",
    ],
    ['2.91', { unshelve: { host: null } }, 'Invalid input for field/attribute unshelve.host: must be string.'],
    ['2.91', { unshelve: { host: 7 } }, 'Invalid input for field/attribute unshelve.host: must be string.'],
    ['2.1', { reboot: null }, 'There is no such action: reboot'],
    ['2.1', { shelve: null, unshelve: null }, 'Malformed request body: expected an object with exactly one action.'],
    ['2.1', [1], 'Malformed request body: expected an object with exactly one action.'],
  ])('at %s refuses %j with 400: %s', async (version, body, message) => {
    const { uuid } = await stub.buildInstance();
    const response = await call('POST', `/v2.1/servers/${uuid}/action`, admin, body, version);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toEqual({ badRequest: { code: 400, message } });
  });

  it('refuses unknown microversions, malformed headers and bodies, and oversized requests', async () => {
    const id = randomUUID();
    const tooNew = await call('GET', `/v2.1/servers/${id}`, owner, undefined, '2.99');
    expect(tooNew.statusCode).toBe(406);
    expect(tooNew.json().notAcceptable.message).toContain('maximum is 2.93');
    const malformed = await api.inject({
      method: 'GET',
      url: `/v2.1/servers/${id}`,
      headers: { 'x-auth-token': owner, 'openstack-api-version': 'compute two' },
    });
    expect(malformed.statusCode).toBe(400);
    const badJson = await api.inject({
      method: 'POST',
      url: `/v2.1/servers/${id}/action`,
      headers: { 'x-auth-token': owner, 'content-type': 'application/json' },
      payload: '{"shelve": ',
    });
    expect(badJson.statusCode).toBe(400);
    expect(badJson.json().badRequest.message).toMatch(/^Malformed request body/);
    const huge = await call('POST', `/v2.1/servers/${id}/action`, owner, { shelve: 'x'.repeat(100_000) });
    expect(huge.statusCode).toBe(413);
    expect(huge.json().overLimit.code).toBe(413);
  });
});
