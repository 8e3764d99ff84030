// Who may reach what, for every endpoint the API has: the list of endpoints is read from the
// router itself, so a new endpoint fails this test until its access rule is written down here.
// Each endpoint is called without a token, with a bad token, by another project, by the owning
// project and by an admin, on a server and an image that belong to the owning project.
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const caller = {
  nobody: undefined,
  forged: 'no-colon-here',
  stranger: 'someone:other-project',
  owner: `${testOwner.userId}:${testOwner.projectId}`,
  admin: 'admin:admin-project',
} as const;
type Caller = keyof typeof caller;

interface Resources {
  serverId: string;
  imageId: string;
  requestId: string;
}

interface Endpoint {
  /** The request, on the owning project's server and image. */
  request(resources: Resources): { url: string; body?: unknown };
  /** The status each caller gets. */
  expect: Record<Caller, number>;
}

const PUBLIC = { nobody: 200, forged: 200, stranger: 200, owner: 200, admin: 200 };
/** Any valid token; nothing in the answer belongs to a project. */
const ANY_PROJECT = { nobody: 401, forged: 401, stranger: 200, owner: 200, admin: 200 };
/** The owning project and admins; another project is told the thing does not exist. */
const PROJECT = { nobody: 401, forged: 401, stranger: 404, owner: 200, admin: 200 };
/** Admins only (the os-services policies). */
const ADMIN = { nobody: 401, forged: 401, stranger: 403, owner: 403, admin: 200 };

const ENDPOINTS: Record<string, Endpoint> = {
  'GET /': { request: () => ({ url: '/' }), expect: PUBLIC },
  'GET /v2.1': { request: () => ({ url: '/v2.1' }), expect: PUBLIC },
  'GET /v2.1/': { request: () => ({ url: '/v2.1/' }), expect: PUBLIC },
  'GET /metrics': {
    request: () => ({ url: '/metrics' }),
    expect: { nobody: 401, forged: 401, stranger: 403, owner: 403, admin: 200 },
  },
  // Lists are filtered by project: checked apart, below.
  'GET /v2.1/servers': { request: () => ({ url: '/v2.1/servers' }), expect: ANY_PROJECT },
  'GET /v2.1/servers/detail': { request: () => ({ url: '/v2.1/servers/detail' }), expect: ANY_PROJECT },
  'GET /v2.1/servers/:id': { request: ({ serverId }) => ({ url: `/v2.1/servers/${serverId}` }), expect: PROJECT },
  'GET /v2.1/servers/:id/os-instance-actions': {
    request: ({ serverId }) => ({ url: `/v2.1/servers/${serverId}/os-instance-actions` }),
    expect: PROJECT,
  },
  'GET /v2.1/servers/:id/os-instance-actions/:requestId': {
    request: ({ serverId, requestId }) => ({ url: `/v2.1/servers/${serverId}/os-instance-actions/${requestId}` }),
    expect: PROJECT,
  },
  // The server is held by another request (task_state deleting), so every action and the delete
  // are refused (409): nothing is set in motion, and a 409 shows the caller got past the project
  // and policy checks.
  'POST /v2.1/servers/:id/action': {
    request: ({ serverId }) => ({ url: `/v2.1/servers/${serverId}/action`, body: { shelve: null } }),
    expect: { nobody: 401, forged: 401, stranger: 404, owner: 409, admin: 409 },
  },
  'DELETE /v2.1/servers/:id': {
    request: ({ serverId }) => ({ url: `/v2.1/servers/${serverId}` }),
    expect: { nobody: 401, forged: 401, stranger: 404, owner: 409, admin: 409 },
  },
  // The flavor is unknown, so that nothing is built (400 naming the flavor); that another project
  // cannot boot from the owner's private image is checked apart, below.
  'POST /v2.1/servers': {
    request: ({ imageId }) => ({
      url: '/v2.1/servers',
      body: { server: { name: 'isolation', imageRef: imageId, flavorRef: 'no-such-flavor' } },
    }),
    expect: { nobody: 401, forged: 401, stranger: 400, owner: 400, admin: 400 },
  },
  'GET /v2.1/flavors': { request: () => ({ url: '/v2.1/flavors' }), expect: ANY_PROJECT },
  'GET /v2.1/flavors/detail': { request: () => ({ url: '/v2.1/flavors/detail' }), expect: ANY_PROJECT },
  'GET /v2.1/flavors/:id': { request: () => ({ url: '/v2.1/flavors/1' }), expect: ANY_PROJECT },
  'GET /v2.1/images': { request: () => ({ url: '/v2.1/images' }), expect: ANY_PROJECT },
  'GET /v2.1/images/:id': { request: ({ imageId }) => ({ url: `/v2.1/images/${imageId}` }), expect: PROJECT },
  'GET /v2.1/os-services': { request: () => ({ url: '/v2.1/os-services' }), expect: ADMIN },
  // A host that does not exist, so that nothing is changed (404 for the admin).
  'PUT /v2.1/os-services/:id': {
    request: () => ({ url: '/v2.1/os-services/disable', body: { host: 'no-such-host', binary: 'nova-compute' } }),
    expect: { ...ADMIN, admin: 404 },
  },
};

/** Every "METHOD /path" the router serves (HEAD aside), read from Fastify's route tree. */
function routesOf(api: FastifyInstance): string[] {
  const routes: string[] = [];
  const prefixes: string[] = [];
  for (const line of api.printRoutes({ commonPrefix: false }).split('\n')) {
    const match = /^([\s│]*)[└├]── (\S+) \(([^)]*)\)$/.exec(line);
    if (!match) continue;
    const depth = match[1]!.length / 4;
    prefixes.length = depth;
    const path = (prefixes[depth - 1] ?? '') + match[2]!;
    prefixes[depth] = path;
    for (const method of match[3]!.split(', '))
      if (method !== 'HEAD' && method !== '-') routes.push(`${method} ${path}`);
  }
  return routes;
}

describe('project isolation and admin-only actions, on every endpoint', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  let resources: Resources;

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack);
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    await api.ready();
    const instance = await stub.buildInstance();
    await stack.pool.query(
      `UPDATE instances SET task_state = 'deleting', task_request_id = 'req-isolation' WHERE uuid = $1`,
      [instance.uuid],
    );
    const actions = await call('GET', `/v2.1/servers/${instance.uuid}/os-instance-actions`, 'admin');
    resources = {
      serverId: instance.uuid,
      imageId: instance.imageRef,
      requestId: actions.json().instanceActions[0].request_id,
    };
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  function call(method: string, url: string, who: Caller, body?: unknown) {
    const token = caller[who];
    return api.inject({
      method: method as 'GET' | 'POST' | 'DELETE',
      url,
      headers: {
        ...(token ? { 'x-auth-token': token } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });
  }

  it('has an access rule written here for every endpoint the router serves', () => {
    expect(routesOf(api).sort()).toEqual(Object.keys(ENDPOINTS).sort());
  });

  it.each(Object.entries(ENDPOINTS))('%s answers each caller as its rule says', async (route, endpoint) => {
    const method = route.split(' ')[0]!;
    const { url, body } = endpoint.request(resources);
    for (const who of Object.keys(caller) as Caller[]) {
      const response = await call(method, url, who, body);
      expect(response.statusCode, `${route} as ${who}: ${response.body.slice(0, 300)}`).toBe(endpoint.expect[who]);
      if (response.statusCode >= 400) {
        // A fault names the problem; a refused caller learns nothing of the resource.
        const [fault] = Object.values(JSON.parse(response.body) as Record<string, { message: string }>);
        expect(fault?.message.length, `${route} as ${who}`).toBeGreaterThan(10);
      }
    }
  });

  it('lists a project its own servers and images only; admins all with all_tenants', async () => {
    for (const url of ['/v2.1/servers', '/v2.1/servers/detail']) {
      const ids = async (who: Caller, query = '') =>
        (await call('GET', url + query, who)).json().servers.map((server: { id: string }) => server.id);
      expect(await ids('owner')).toContain(resources.serverId);
      expect(await ids('stranger')).not.toContain(resources.serverId);
      expect(await ids('stranger', '?all_tenants=1')).not.toContain(resources.serverId);
      expect(await ids('admin', '?all_tenants=1')).toContain(resources.serverId);
    }
    const images = async (who: Caller) =>
      (await call('GET', '/v2.1/images', who)).json().images.map((image: { id: string }) => image.id);
    expect(await images('owner')).toContain(resources.imageId);
    expect(await images('stranger')).not.toContain(resources.imageId);
  });

  it("refuses to build another project's server from the owner's private image", async () => {
    const server = { name: 'isolation', imageRef: resources.imageId, flavorRef: '1' };
    const response = await call('POST', '/v2.1/servers', 'stranger', { server });
    expect(response.statusCode).toBe(400);
    expect(response.json().badRequest.message).toBe(`Image ${resources.imageId} could not be found.`);
  });
});
