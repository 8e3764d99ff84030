// PostgreSQL dropping every connection of the workers (pg_terminate_backend, as a failover or a
// restart does) in the middle of a shelve and of an unshelve: the steps that lose their
// connection retry on a new one, and both actions complete with the guest's bytes intact.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { startShelve } from '../support/faults.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('PostgreSQL dropping its connections mid-action', () => {
  let stack: TestStack;
  let vm: KnownVm;

  /** Terminates every connection of the workers and the test to the database once the instance is in `taskState`. */
  async function dropConnectionsIn(taskState: string): Promise<number> {
    while ((await getInstance(stack.pool, vm.instanceUuid)).taskState !== taskState) await sleep(50);
    // From a connection of its own: the pool's, the workers' included, all go.
    const admin = new pg.Client({ connectionString: stack.config.databaseUrl });
    await admin.connect();
    const { rows } = await admin.query<{ terminated: boolean }>(
      `SELECT pg_terminate_backend(pid) AS terminated
         FROM (SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()) others`,
    );
    await admin.end();
    return rows.filter((row) => row.terminated).length;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host);
  });

  afterAll(async () => {
    await vm?.remove();
    await stack?.stop();
  });

  it('during a shelve and an unshelve: both complete, the disk intact', async () => {
    const { instanceUuid } = vm;
    // A guest with no OS ignores the shutdown request: 2 s in 'shelving' to drop connections in.
    const shelve = await startShelve(stack, instanceUuid, 2);
    expect(await dropConnectionsIn('shelving')).toBeGreaterThan(0);
    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null });

    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    expect(await dropConnectionsIn('spawning')).toBeGreaterThan(0);
    const instance = (await unshelve.result()) as Instance;
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, powerState: 1 });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });
});
