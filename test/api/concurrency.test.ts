// Concurrent requests through the API (real conductor, PostgreSQL and Glance; a stub compute
// host): many actions at once on one instance, and shelve/unshelve storms over many instances.
// Exactly the requests the state allows win (202), every loser gets a 409 that says why, and
// every instance ends in a valid state.
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const owner = `${testOwner.userId}:${testOwner.projectId}`;
const admin = 'admin:admin-project';
type Action = 'shelve' | 'shelveOffload' | 'unshelve';

describe('concurrent actions through the API', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;

  beforeAll(async () => {
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '0' });
    stub = await startStubHost(stack);
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  async function act(id: string, action: Action) {
    const response = await api.inject({
      method: 'POST',
      url: `/v2.1/servers/${id}/action`,
      headers: { 'content-type': 'application/json', 'x-auth-token': action === 'shelveOffload' ? admin : owner },
      payload: JSON.stringify({ [action]: null }),
    });
    return { action, status: response.statusCode, body: response.body };
  }

  const finished = (id: string, action: Action) => stack.client.workflow.getHandle(workflowId(action, id)).result();

  it('20 mixed actions at once on one ACTIVE instance: one shelve wins, the rest get 409', async () => {
    const { uuid } = await stub.buildInstance();
    const actions: Action[] = Array.from(
      { length: 20 },
      (_, i) => (['shelve', 'shelveOffload', 'unshelve'] as const)[i % 3]!,
    );
    const responses = await Promise.all(actions.map((action) => act(uuid, action)));

    const won = responses.filter((response) => response.status === 202);
    expect(won.map((response) => response.action)).toEqual(['shelve']);
    for (const lost of responses.filter((response) => response.status !== 202)) {
      expect(lost.status, lost.body).toBe(409);
      expect(JSON.parse(lost.body).conflictingRequest.message).toMatch(/task_state|vm_state|still running/);
    }
    await finished(uuid, 'shelve');
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'shelved_offloaded', taskState: null });
  });

  it('storms over 20 instances: each shelved once, then each unshelved once, all end ACTIVE', async () => {
    const instances = await Promise.all(Array.from({ length: 20 }, () => stub.buildInstance()));
    for (const action of ['shelve', 'unshelve'] as const) {
      // Every instance asked twice at once: one request wins, the duplicate is refused.
      const responses = await Promise.all(instances.flatMap(({ uuid }) => [act(uuid, action), act(uuid, action)]));
      for (let i = 0; i < instances.length; i++) {
        const pair = [responses[2 * i]!.status, responses[2 * i + 1]!.status].sort();
        expect(pair, responses[2 * i + 1]!.body).toEqual([202, 409]);
      }
      await Promise.all(instances.map(({ uuid }) => finished(uuid, action)));
    }
    for (const { uuid } of instances) {
      expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null });
    }
  });
});
