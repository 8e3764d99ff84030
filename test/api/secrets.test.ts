// A Keystone token that drives an action through the API goes no further than the API: it is in
// no workflow history (inputs, results, activity arguments), search attribute or memo, no
// actions log row, and no image property in Glance.
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { loadConfig } from '../../lib/config.js';
import { workflowId } from '../../lib/temporal.js';
import { adminPassword, issueToken } from '../support/keystone.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

describe('tokens stay in the API', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  let token: string;

  beforeAll(async () => {
    // The image stays in Glance after the shelve (no offload), to be looked at.
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1' });
    stub = await startStubHost(stack);
    const config = loadConfig({ ...process.env, SHELVED_OFFLOAD_TIME: '-1', AUTH_STRATEGY: 'keystone' });
    api = buildApi({ config, pool: stack.pool, client: stack.client });
    token = await issueToken('admin', adminPassword, { name: 'admin' });
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  it('after a shelve driven by a Keystone token, the token is found nowhere else', async () => {
    const { uuid } = await stub.buildInstance();
    const response = await api.inject({
      method: 'POST',
      url: `/v2.1/servers/${uuid}/action`,
      headers: { 'content-type': 'application/json', 'x-auth-token': token },
      payload: JSON.stringify({ shelve: null }),
    });
    expect(response.statusCode, response.body).toBe(202);
    const handle = stack.client.workflow.getHandle(workflowId('shelve', uuid));
    await handle.result();

    const history = JSON.stringify(await handle.fetchHistory());
    const description = await handle.describe();
    const tagged = JSON.stringify([description.memo, description.searchAttributes, description.staticSummary]);
    const { rows } = await stack.pool.query(
      `SELECT row_to_json(a)::text AS action, (SELECT json_agg(e)::text FROM instance_action_events e
          WHERE e.action_id = a.id) AS events
         FROM instance_actions a WHERE a.instance_uuid = $1`,
      [uuid],
    );
    const imageId = (
      await stack.pool.query<{ value: string }>(
        `SELECT value FROM instance_system_metadata WHERE instance_uuid = $1 AND key = 'shelved_image_id'`,
        [uuid],
      )
    ).rows[0]!.value;
    const image = JSON.stringify(await stack.glance.getImage(testOwner, imageId));

    expect(history.length).toBeGreaterThan(1000);
    expect(image).toContain(uuid);
    for (const [where, text] of Object.entries({ history, tagged, actions: JSON.stringify(rows), image })) {
      expect(text.includes(token), `the token is in the ${where}`).toBe(false);
    }
    await stack.glance.unprotectAndDelete(stack.glance.snapshotContext, imageId);
  });
});
