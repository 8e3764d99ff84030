// Property-based fuzzing of the compute API (fast-check): whatever the action body, the
// microversion header, the token or the server id, the answer is a 4xx in Nova's fault shape
// whose message names the problem, never a 5xx. The target server is in vm_state error, where
// every action is refused, so that no input, however valid, sets anything in motion.
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { FAULT_NAMES, type FaultCode } from '../../api/faults.js';
import { buildApi } from '../../api/server.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const owner = `${testOwner.userId}:${testOwner.projectId}`;

describe('the compute API under fuzzing', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  let serverId: string;

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack);
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    serverId = (await stub.buildInstance()).uuid;
    await stack.pool.query(`UPDATE instances SET vm_state = 'error' WHERE uuid = $1`, [serverId]);
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  /** A 4xx in Nova's shape, with a message of its own; returns the status. */
  function expectFault(response: { statusCode: number; body: string }, context: unknown): number {
    const where = `${JSON.stringify(context)} -> ${response.statusCode} ${response.body}`;
    const name = FAULT_NAMES[response.statusCode as FaultCode];
    expect(response.statusCode, where).toBeGreaterThanOrEqual(400);
    expect(response.statusCode, where).toBeLessThan(500);
    expect(name, where).toBeDefined();
    const body = JSON.parse(response.body) as Record<string, { code: number; message: string }>;
    const fault = body[name];
    expect(fault?.code, where).toBe(response.statusCode);
    expect(fault?.message.length, where).toBeGreaterThan(10);
    return response.statusCode;
  }

  const microversion = fc.oneof(
    fc.constantFrom('2.1', '2.76', '2.77', '2.90', '2.91', '2.93', 'latest'),
    fc.string({ maxLength: 20 }),
    fc.tuple(fc.nat(5), fc.nat(200)).map(([major, minor]) => `${major}.${minor}`),
  );
  const token = fc.oneof(fc.constantFrom(owner, 'admin:admin-project', 'someone:other-project'), fc.string());
  const unshelveBody = fc.oneof(
    fc.constant(null),
    fc.record(
      {
        availability_zone: fc.oneof(fc.constant(null), fc.string(), fc.jsonValue()),
        host: fc.oneof(fc.string(), fc.jsonValue()),
        extra: fc.jsonValue(),
      },
      { requiredKeys: [] },
    ),
    fc.jsonValue(),
  );
  const actionBody = fc.oneof(
    fc.record({ shelve: fc.oneof(fc.constant(null), fc.jsonValue()) }),
    fc.record({ shelveOffload: fc.oneof(fc.constant(null), fc.jsonValue()) }),
    fc.record({ unshelve: unshelveBody }),
    fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 }),
    fc.jsonValue(),
  );

  it('answers every action body, microversion and token with a 4xx that says why', async () => {
    await fc.assert(
      fc.asyncProperty(actionBody, microversion, token, async (body, version, auth) => {
        const response = await api.inject({
          method: 'POST',
          url: `/v2.1/servers/${serverId}/action`,
          headers: {
            'content-type': 'application/json',
            'x-auth-token': auth,
            'openstack-api-version': `compute ${version}`,
          },
          payload: JSON.stringify(body),
        });
        expectFault(response, { body, version, auth });
      }),
      { numRuns: 300 },
    );
    // Nothing was set in motion.
    expect(await getInstance(stack.pool, serverId)).toMatchObject({ vmState: 'error', taskState: null });
  });

  it('answers malformed payloads with 400 or 413', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.string({ minLength: 70_000, maxLength: 80_000 })), async (raw) => {
        const response = await api.inject({
          method: 'POST',
          url: `/v2.1/servers/${serverId}/action`,
          headers: { 'content-type': 'application/json', 'x-auth-token': owner },
          payload: raw,
        });
        expect([400, 409, 413]).toContain(expectFault(response, { raw: raw.slice(0, 80) }));
      }),
      { numRuns: 150 },
    );
  });

  it('answers any server id in the path with 404, never a 5xx', async () => {
    const id = fc
      .oneof(
        fc.string({ minLength: 1 }),
        fc.constantFrom('../..', '%2e%2e', 'x'.repeat(5000), randomUUID(), `${randomUUID()}\u0000`),
        fc.uuid(),
        // '.' and '..' alone are path segments that URLs resolve away, not ids.
      )
      .filter((raw) => raw !== '.' && raw !== '..');
    await fc.assert(
      fc.asyncProperty(id, fc.constantFrom('GET', 'POST'), async (raw, method) => {
        const path = encodeURIComponent(raw);
        const response = await api.inject({
          method,
          url: method === 'GET' ? `/v2.1/servers/${path}` : `/v2.1/servers/${path}/action`,
          headers: { 'content-type': 'application/json', 'x-auth-token': owner },
          ...(method === 'POST' ? { payload: JSON.stringify({ shelve: null }) } : {}),
        });
        expect(expectFault(response, { raw, method })).toBe(404);
      }),
      { numRuns: 200 },
    );
  });
});
