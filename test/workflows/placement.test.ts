// Placement (F6, issue 11): choosing a host and reserving its capacity are one step, so crowds of
// unshelves never overcommit a host; disabled hosts get nothing new; a host whose worker does not
// take the spawn is passed over for another (Nova's alternates). Stub hosts in a zone of their own.
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listComputeServices, reportComputeNode, updateComputeService } from '../../lib/db/compute-services.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { computeTaskQueue } from '../../lib/temporal.js';
import { type Instance, PowerState } from '../../lib/nova.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

/** What each small host holds: four instances of the test's flavor. */
const HOST_MEMORY_MB = 1024;
const FLAVOR_MEMORY_MB = 256;

describe('placement', () => {
  let stack: TestStack;
  const zone = `az-place-${randomUUID().slice(0, 8)}`;
  /** The instances each stub host holds now, as its spawns and destroys see them. */
  const held = new Map<string, Set<string>>();
  let mostHeld = 0;
  let a: StubHost;
  let b: StubHost;

  function track(host: () => string) {
    return {
      async spawnInstance({ instance }: { instance: Instance }) {
        const set = held.get(host()) ?? new Set<string>();
        held.set(host(), set.add(instance.uuid));
        mostHeld = Math.max(mostHeld, set.size);
        // Slow enough that the unshelves overlap.
        await new Promise((resolve) => setTimeout(resolve, 500));
        return PowerState.RUNNING;
      },
      async destroyInstance({ instanceUuid }: { instanceUuid: string }) {
        held.get(host())?.delete(instanceUuid);
      },
    };
  }

  beforeAll(async () => {
    stack = await startTestStack({ SPAWN_START_TIMEOUT: '3' });
    const names = { a: `place-a-${randomUUID().slice(0, 6)}`, b: `place-b-${randomUUID().slice(0, 6)}` };
    a = await startStubHost(
      stack,
      track(() => names.a),
      { host: names.a, availabilityZone: zone, memoryMb: HOST_MEMORY_MB },
    );
    b = await startStubHost(
      stack,
      track(() => names.b),
      { host: names.b, availabilityZone: zone, memoryMb: HOST_MEMORY_MB },
    );
  });

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await stack?.stop();
  });

  async function run(action: 'shelve' | 'unshelve', instanceUuid: string): Promise<Instance> {
    const handle = await startAction(stack.client, stack.config, action, {
      instanceUuid,
      ...(action === 'shelve' ? { shelvedOffloadTime: 0 } : {}),
    });
    return (await handle.result()) as Instance;
  }

  async function offloaded(host: StubHost, count: number): Promise<string[]> {
    const built = await Promise.all(
      Array.from({ length: count }, () => host.buildInstance({ availabilityZone: zone, memoryMb: FLAVOR_MEMORY_MB })),
    );
    await Promise.all(built.map((instance) => run('shelve', instance.uuid)));
    return built.map((instance) => instance.uuid);
  }

  it('places 20 unshelves at once on two hosts with room for 8 without overcommitting either', async () => {
    const uuids: string[] = [];
    for (let round = 0; round < 3; round++)
      uuids.push(...(await offloaded(a, 4)), ...(await offloaded(b, round < 2 ? 4 : 0)));
    expect(uuids).toHaveLength(20);
    mostHeld = 0;

    const results = await Promise.allSettled(uuids.map((uuid) => run('unshelve', uuid)));
    const unshelved = results.filter((result) => result.status === 'fulfilled');
    const refused = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
    console.log(
      `20 unshelves at once: ${unshelved.length} placed, ${refused.length} refused; at most ${mostHeld} on a host`,
    );
    expect(unshelved).toHaveLength(8);
    expect(mostHeld).toBeLessThanOrEqual(HOST_MEMORY_MB / FLAVOR_MEMORY_MB);
    for (const error of refused) {
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect((error as WorkflowFailedError).cause).toMatchObject({ type: 'NoValidHost' });
    }
    const instances = await Promise.all(uuids.map((uuid) => getInstance(stack.pool, uuid)));
    for (const host of [a.host, b.host]) {
      const active = instances.filter((instance) => instance.host === host);
      expect(active.every((instance) => instance.vmState === 'active')).toBe(true);
      expect(active.length * FLAVOR_MEMORY_MB).toBeLessThanOrEqual(HOST_MEMORY_MB);
    }
    // The refused ones are as they were: offloaded, on no host, free.
    expect(instances.filter((instance) => instance.vmState === 'shelved_offloaded')).toHaveLength(12);
    expect(instances.filter((instance) => instance.host === null && instance.taskState === null)).toHaveLength(12);
    await Promise.all(
      instances.filter((instance) => instance.vmState === 'active').map((instance) => run('shelve', instance.uuid)),
    );
  });

  it('sends nothing new to a disabled host, and uses it again once enabled', async () => {
    const [instanceUuid] = await offloaded(a, 1);
    const [service] = await listComputeServices(stack.pool, a.host);
    await updateComputeService(stack.pool, service!.serviceId, { disabled: true, disabledReason: 'maintenance' });
    try {
      for (let i = 0; i < 3; i++) {
        expect(await run('unshelve', instanceUuid!)).toMatchObject({ host: b.host });
        await run('shelve', instanceUuid!);
      }
      const handle = await startAction(stack.client, stack.config, 'unshelve', {
        instanceUuid: instanceUuid!,
        host: a.host,
      });
      const error = await handle.result().catch((failure: unknown) => failure);
      expect((error as WorkflowFailedError).cause?.message).toContain(`${a.host}: disabled (maintenance)`);
    } finally {
      await updateComputeService(stack.pool, service!.serviceId, { disabled: false });
    }
    expect(await run('unshelve', instanceUuid!)).toMatchObject({ host: a.host });
    await run('shelve', instanceUuid!);
  });

  it('tries another host when the chosen one does not take the spawn', async () => {
    const [instanceUuid] = await offloaded(a, 1);
    // A host that reported a moment ago, with the most free memory, but no worker behind it.
    const silent = `place-silent-${randomUUID().slice(0, 6)}`;
    await reportComputeNode(stack.pool, {
      host: silent,
      availabilityZone: zone,
      hypervisorType: 'stub',
      vcpus: 64,
      memoryMb: 64 * 1024,
      localGb: 100,
      cpuAllocationRatio: 4,
      ramAllocationRatio: 1,
      diskAllocationRatio: 1,
    });
    try {
      const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: instanceUuid! });
      const unshelved = (await handle.result()) as Instance;
      expect([a.host, b.host]).toContain(unshelved.host);
      // The spawn went to the silent host first, which never took it.
      const spawns = (await handle.fetchHistory()).events!.flatMap((event) => {
        const scheduled = event.activityTaskScheduledEventAttributes;
        return scheduled?.activityType?.name === 'spawnInstance' ? [scheduled.taskQueue?.name] : [];
      });
      expect(spawns).toEqual([computeTaskQueue(silent), computeTaskQueue(unshelved.host!)]);
      // Offloaded again, it takes no room another case counts on.
      await run('shelve', instanceUuid!);
    } finally {
      await stack.pool.query('DELETE FROM compute_nodes WHERE host = $1', [silent]);
    }
  });
});
