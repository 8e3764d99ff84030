// The API with Keystone tokens, against the stack's real Keystone: users, a project and role
// assignments are made through Keystone's API, and tokens come from password authentication.
// No workers run: every request here is answered before an action would start.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { Client, type Connection } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import { type Config, loadConfig } from '../../lib/config.js';
import { connectClient } from '../../lib/temporal-client.js';
import { adminPassword, issueToken, keystone } from '../support/keystone.js';

describe('the compute API with Keystone tokens', () => {
  const suffix = randomUUID().slice(0, 8);
  const password = randomUUID();
  let adminToken: string;
  let projectId: string;
  const userIds: Record<'member' | 'admin', string> = { member: '', admin: '' };
  const tokens: Record<'member' | 'admin' | 'unscoped', string> = { member: '', admin: '', unscoped: '' };
  const servers = { mine: randomUUID(), theirs: randomUUID() };
  let config: Config;
  let pool: pg.Pool;
  let connection: Connection;
  let api: FastifyInstance;

  beforeAll(async () => {
    // The admin that keystone-manage bootstrap made, in its project "admin".
    adminToken = await issueToken('admin', adminPassword, { name: 'admin' });
    const roleId = async (name: string) =>
      (await keystone<{ roles: { id: string }[] }>('GET', `/roles?name=${name}`, adminToken)).body.roles[0]!.id;

    const project = { name: `vm-shelve-test-${suffix}`, domain_id: 'default' };
    projectId = (await keystone<{ project: { id: string } }>('POST', '/projects', adminToken, { project })).body.project
      .id;
    for (const role of ['member', 'admin'] as const) {
      const name = `vm-shelve-${role}-${suffix}`;
      const { user } = (
        await keystone<{ user: { id: string } }>('POST', '/users', adminToken, {
          // No default project: Keystone would scope an unscoped request to it.
          user: { name, password, domain_id: 'default' },
        })
      ).body;
      userIds[role] = user.id;
      await keystone('PUT', `/projects/${projectId}/users/${user.id}/roles/${await roleId(role)}`, adminToken);
      tokens[role] = await issueToken(name, password, { id: projectId });
    }
    tokens.unscoped = await issueToken(`vm-shelve-member-${suffix}`, password);

    config = loadConfig({ ...process.env, AUTH_STRATEGY: 'keystone' });
    pool = new pg.Pool({ connectionString: config.databaseUrl });
    connection = await connectClient(config);
    for (const [which, owner] of [
      ['mine', { projectId, userId: userIds.member }],
      ['theirs', { projectId: `other-project-${suffix}`, userId: 'someone' }],
    ] as const) {
      await createInstance(pool, {
        uuid: servers[which],
        displayName: `keystone-${which}`,
        ...owner,
        imageRef: randomUUID(),
        flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
        availabilityZone: null,
        requestId: `req-${randomUUID()}`,
        systemMetadata: {},
        blockDeviceMappings: [],
        ports: [],
      });
    }
    api = buildApi({ config, pool, client: new Client({ connection, namespace: config.temporal.namespace }) });
  });

  afterAll(async () => {
    await api?.close();
    await pool?.query('DELETE FROM instances WHERE uuid = ANY($1)', [Object.values(servers)]);
    await Promise.all([pool?.end(), connection?.close()]);
    if (adminToken) {
      for (const id of Object.values(userIds).filter(Boolean)) await keystone('DELETE', `/users/${id}`, adminToken);
      if (projectId) await keystone('DELETE', `/projects/${projectId}`, adminToken);
    }
  });

  const call = (method: 'GET' | 'POST', url: string, token?: string, body?: unknown) =>
    api.inject({
      method,
      url,
      headers: {
        ...(token ? { 'x-auth-token': token } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });

  it('answers version discovery without a token', async () => {
    const root = await call('GET', '/');
    expect(root.statusCode).toBe(200);
    expect(root.json().versions[0]).toMatchObject({ id: 'v2.1', status: 'CURRENT' });
  });

  it('refuses a request without a token, or with one Keystone does not know, with 401 in Nova shape', async () => {
    const none = await call('GET', '/v2.1/servers');
    expect(none.statusCode).toBe(401);
    expect(none.json()).toEqual({
      unauthorized: {
        code: 401,
        message:
          'The request you have made requires authentication: send a project-scoped Keystone token as X-Auth-Token.',
      },
    });
    // Garbage, a Fernet-looking token Keystone cannot decrypt, and noauth2's kind.
    for (const token of ['not a token', `gAAAAA${'x'.repeat(180)}`, 'admin:admin']) {
      const response = await call('GET', '/v2.1/servers', token);
      expect(response.statusCode, token).toBe(401);
      expect(response.json()).toEqual({
        unauthorized: {
          code: 401,
          message: 'The request you have made requires authentication: the token is invalid or has expired.',
        },
      });
    }
  });

  it('refuses an unscoped token: a project-scoped one is needed', async () => {
    const response = await call('GET', '/v2.1/servers', tokens.unscoped);
    expect(response.statusCode).toBe(401);
    expect(response.json().unauthorized.message).toContain('a project-scoped token is needed');
  });

  it("shows a member its own project's servers, not another's, and refuses it what only admins may do", async () => {
    const listed = await call('GET', '/v2.1/servers/detail', tokens.member);
    expect(listed.statusCode).toBe(200);
    expect(listed.json().servers).toEqual([
      expect.objectContaining({ id: servers.mine, tenant_id: projectId, user_id: userIds.member }),
    ]);
    const mine = await call('GET', `/v2.1/servers/${servers.mine}`, tokens.member);
    expect(mine.statusCode).toBe(200);
    expect(mine.json().server).not.toHaveProperty('OS-EXT-SRV-ATTR:host');
    expect((await call('GET', `/v2.1/servers/${servers.theirs}`, tokens.member)).statusCode).toBe(404);

    const offload = await call('POST', `/v2.1/servers/${servers.mine}/action`, tokens.member, { shelveOffload: null });
    expect(offload.statusCode).toBe(403);
    expect(offload.json().forbidden.message).toBe(
      "Policy doesn't allow os_compute_api:os-shelve:shelve_offload to be performed.",
    );
    expect((await call('GET', '/metrics', tokens.member)).statusCode).toBe(403);
  });

  it("lets an admin see every project's servers, their hosts and the metrics", async () => {
    const theirs = await call('GET', `/v2.1/servers/${servers.theirs}`, tokens.admin);
    expect(theirs.statusCode).toBe(200);
    expect(theirs.json().server).toHaveProperty('OS-EXT-SRV-ATTR:host');
    const all = (await call('GET', '/v2.1/servers?all_tenants=1', tokens.admin)).json().servers;
    expect(all.map((server: { id: string }) => server.id)).toEqual(expect.arrayContaining(Object.values(servers)));
    expect((await call('GET', '/metrics', tokens.admin)).statusCode).toBe(200);
  });

  it('answers 503 naming Keystone when Keystone cannot be reached', async () => {
    // A port that was free a moment ago: nothing listens there.
    const server = createServer().listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as { port: number };
    await new Promise((resolve) => server.close(resolve));
    const unreachable = buildApi({
      config: loadConfig({ ...process.env, AUTH_STRATEGY: 'keystone', KEYSTONE_URL: `http://127.0.0.1:${port}/v3` }),
      pool,
      client: new Client({ connection, namespace: config.temporal.namespace }),
    });
    const response = await unreachable.inject({
      method: 'GET',
      url: '/v2.1/servers',
      headers: { 'x-auth-token': tokens.member },
    });
    await unreachable.close();
    expect(response.statusCode).toBe(503);
    expect(response.json()).toEqual({
      serviceUnavailable: {
        code: 503,
        message: `Keystone at http://127.0.0.1:${port}/v3 could not be reached to validate the token; try again later.`,
      },
    });
  });
});
