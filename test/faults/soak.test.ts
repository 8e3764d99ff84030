// A soak: real instances shelved and unshelved over and over while faults land at random moments:
// an operator's cancel or terminate of a running action, the compute worker killed (SIGKILL) and
// restarted, Glance stopped and started again. Every instance is driven on from whatever state an
// interruption left it in (a terminated action is settled by one reconcile, as the Schedule would).
// At the end every instance is free, its guest's bytes intact, with no snapshot image but the one
// it needs and no domain of an offloaded instance left on the host. The figures are printed.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { type Config, loadConfig } from '../../lib/config.js';
import { VmState } from '../../lib/nova.js';
import { reconcileNow, startShelve, startStack, stopService } from '../support/faults.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startWorkerProcess, type WorkerProcess } from '../support/worker-process.js';

const INSTANCES = 3;
/** How long the instances cycle under faults; each cycle is a shelve (with offload) and an unshelve. */
const SOAK_MS = 150_000;
/** A fault every 5 to 12 s. */
const FAULT_GAP_MS = [5_000, 12_000] as const;
const FAULTS = ['cancel', 'terminate', 'kill compute worker', 'restart Glance'] as const;
type Fault = (typeof FAULTS)[number];

/** A small seeded generator, so that a failing run can be replayed with SOAK_SEED. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('a soak of shelves and unshelves under random faults', () => {
  let stack: TestStack;
  let hostConfig: Config;
  let worker: WorkerProcess;
  const host = `soak-${randomUUID().slice(0, 8)}`;
  /** A zone of the soak host's own: its instances are unshelved there, not on other test hosts. */
  const zone = `${host}-zone`;
  const env = () => ({ COMPUTE_HOST: host, AVAILABILITY_ZONE: zone, INSTANCES_PATH: hostConfig.compute.instancesPath });
  const vms: KnownVm[] = [];
  /** The action each instance is running now, for the faults to pick from. */
  const running = new Map<string, WorkflowHandle>();

  beforeAll(async () => {
    stack = await startTestStack();
    hostConfig = loadConfig({
      ...process.env,
      COMPUTE_HOST: host,
      INSTANCES_PATH: `${stack.config.compute.instancesPath}-${host}`,
    });
    worker = await startWorkerProcess('compute', env());
    for (let i = 0; i < INSTANCES; i++)
      vms.push(await buildKnownVm(stack, host, { sizeMiB: 256, availabilityZone: zone }));
  }, 300_000);

  afterAll(async () => {
    // The soak host goes first: no later test is scheduled onto it, whatever else fails here.
    await worker?.stop();
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = $1', [host]);
    for (const vm of vms) await vm.remove(hostConfig);
    await stack?.stop();
  }, 180_000);

  /** The next action from where the instance is, run to its end; true when it succeeded. */
  async function step(instanceUuid: string): Promise<'shelved' | 'unshelved' | 'interrupted'> {
    const instance = await getInstance(stack.pool, instanceUuid);
    if (instance.taskState !== null) {
      // Its action was terminated: nothing of it runs again; the reconciler settles it (or, if
      // a fault stops this run, the next one does).
      await reconcileNow(stack, [instanceUuid]).catch(() => undefined);
      return 'interrupted';
    }
    const shelving = instance.vmState === VmState.ACTIVE;
    const handle = shelving
      ? await startShelve(stack, instanceUuid)
      : await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    running.set(instanceUuid, handle);
    try {
      await handle.result();
      return shelving ? 'shelved' : 'unshelved';
    } catch {
      return 'interrupted';
    } finally {
      running.delete(instanceUuid);
    }
  }

  async function inject(fault: Fault, pick: () => number): Promise<boolean> {
    if (fault === 'kill compute worker') {
      await worker.kill();
      await sleep(2000);
      worker = await startWorkerProcess('compute', env());
      return true;
    }
    if (fault === 'restart Glance') {
      await stopService('glance');
      await sleep(2000);
      await startStack();
      return true;
    }
    const handles = [...running.values()];
    if (handles.length === 0) return false;
    const handle = handles[Math.floor(pick() * handles.length)]!;
    if (fault === 'cancel') await handle.cancel().catch(() => undefined);
    else await handle.terminate('soak: an operator terminates').catch(() => undefined);
    return true;
  }

  it('keeps every instance settled, intact and usable', async () => {
    const seed = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);
    const pick = random(seed);
    const deadline = Date.now() + SOAK_MS;
    const cycles = new Map<string, number>();
    const faults = new Map<Fault, number>();

    const cycling = vms.map(async ({ instanceUuid }) => {
      let shelved = false;
      while (Date.now() < deadline) {
        const outcome = await step(instanceUuid);
        if (outcome === 'unshelved' && shelved) cycles.set(instanceUuid, (cycles.get(instanceUuid) ?? 0) + 1);
        shelved = outcome === 'shelved';
      }
    });
    const injecting = (async () => {
      for (;;) {
        const [least, most] = FAULT_GAP_MS;
        await sleep(least + pick() * (most - least));
        if (Date.now() >= deadline) return;
        const fault = FAULTS[Math.floor(pick() * FAULTS.length)]!;
        if (await inject(fault, pick)) faults.set(fault, (faults.get(fault) ?? 0) + 1);
      }
    })();
    // Every fault ends (Glance up again, the worker running) before anything is checked, even if a cycle failed.
    const ended = await Promise.allSettled([...cycling, injecting]);
    for (const outcome of ended) if (outcome.status === 'rejected') throw outcome.reason;

    const total = [...cycles.values()].reduce((sum, n) => sum + n, 0);
    console.log(
      `soak (seed ${seed}): ${total} shelve+unshelve cycles over ${INSTANCES} instances; faults: ` +
        FAULTS.map((fault) => `${fault} ${faults.get(fault) ?? 0}`).join(', '),
    );
    expect(total).toBeGreaterThan(0);
    expect([...faults.values()].reduce((sum, n) => sum + n, 0)).toBeGreaterThan(0);

    // Settled (one reconcile, as the Schedule runs), and brought back to ACTIVE: its bytes intact,
    // nothing left in Glance or libvirt.
    await reconcileNow(
      stack,
      vms.map((vm) => vm.instanceUuid),
    );
    for (const vm of vms) {
      const instance = await getInstance(stack.pool, vm.instanceUuid);
      expect(instance.taskState, vm.instanceUuid).toBeNull();
      if (instance.vmState !== VmState.ACTIVE) {
        // A shelve interrupted in its offload stays SHELVED, its domain kept; offloaded has none.
        expect([VmState.SHELVED, VmState.SHELVED_OFFLOADED]).toContain(instance.vmState);
        const domain = await stack.libvirt.lookupInstance(vm.instanceUuid);
        expect(domain === null).toBe(instance.vmState === VmState.SHELVED_OFFLOADED);
        await (await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid })).result();
      }
      expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({ vmState: 'active', host });
      expect(await vm.diskIsIntact(hostConfig)).toBe(true);
      expect(
        await stack.glance.listImages(stack.glance.snapshotContext, { name: `${vm.displayName}-shelved` }),
      ).toEqual([]);
    }
    // A last full cycle for each.
    for (const vm of vms) {
      expect(await (await startShelve(stack, vm.instanceUuid)).result()).toMatchObject({
        vmState: 'shelved_offloaded',
      });
      expect(
        await (await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid })).result(),
      ).toMatchObject({ vmState: 'active' });
      expect(await vm.diskIsIntact(hostConfig)).toBe(true);
    }
  }, 900_000);
});
