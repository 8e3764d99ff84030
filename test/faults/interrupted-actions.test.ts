// Every action, interrupted at each of its compute steps by an operator's cancel (the Web UI's
// Cancel) or terminate: a cancelled action settles the instance itself, a terminated one is settled
// by one reconcile; either way the instance is free, as the action found it (or as far forward as
// was safe), with no snapshot image left but the one it needs, and the next actions succeed. On a
// stub host, whose steps wait at the chosen one until the action goes away: the steps' real work
// is covered by test/faults/cancel.test.ts and test/faults/terminate.test.ts.
import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import type { WorkflowHandle } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import type { ComputeActivities } from '../../activities/compute/index.js';
import { getInstance } from '../../lib/db/instances.js';
import { claimInstance } from '../../lib/db/task-states.js';
import { type Action, startAction } from '../../lib/actions.js';
import { type Instance, PowerState, VmState } from '../../lib/nova.js';
import { reconcileNow } from '../support/faults.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

type Step = keyof Pick<
  ComputeActivities,
  'powerOffInstance' | 'snapshotInstance' | 'destroyInstance' | 'spawnInstance' | 'powerOnInstance'
>;

interface Case {
  action: Action;
  step: Step;
  /** The state the instance is brought to before the action. */
  from: VmState | 'none';
  /** What the instance may be once settled. */
  settled: VmState[];
}

const CASES: Case[] = [
  { action: 'build', step: 'spawnInstance', from: 'none', settled: [VmState.ERROR] },
  { action: 'shelve', step: 'powerOffInstance', from: VmState.ACTIVE, settled: [VmState.ACTIVE] },
  { action: 'shelve', step: 'snapshotInstance', from: VmState.ACTIVE, settled: [VmState.ACTIVE] },
  // The offload may have removed the domain before it was interrupted: offloaded is as safe.
  {
    action: 'shelveOffload',
    step: 'destroyInstance',
    from: VmState.SHELVED,
    settled: [VmState.SHELVED, VmState.SHELVED_OFFLOADED],
  },
  { action: 'unshelve', step: 'powerOnInstance', from: VmState.SHELVED, settled: [VmState.SHELVED] },
  { action: 'unshelve', step: 'spawnInstance', from: VmState.SHELVED_OFFLOADED, settled: [VmState.SHELVED_OFFLOADED] },
  { action: 'delete', step: 'destroyInstance', from: VmState.ACTIVE, settled: [VmState.ACTIVE] },
];

describe('an action cancelled or terminated at each of its compute steps', () => {
  let stack: TestStack;
  let stub: StubHost;
  /** The step that waits, and a way to tell the test it was reached. */
  let holding: { step: Step; reached: () => void } | null = null;
  /** What the stub host's libvirt shows; no domain for every other instance. */
  const powerStates: Record<string, PowerState> = {};

  /** A stub step that, when it is the one held, waits until its action goes away. */
  function held<F extends (...args: never[]) => Promise<unknown>>(step: Step, real: F): F {
    return (async (...args: Parameters<F>) => {
      if (holding?.step === step) {
        holding.reached();
        // Context.sleep rejects once the activity is cancelled (its workflow cancelled or gone).
        for (;;) {
          Context.current().heartbeat();
          await Context.current().sleep(200);
        }
      }
      return real(...args);
    }) as F;
  }

  beforeAll(async () => {
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1' });
    stub = await startStubHost(stack, {
      powerOffInstance: held('powerOffInstance', async () => PowerState.SHUTDOWN),
      snapshotInstance: held('snapshotInstance', ({ imageId }) => stub.snapshot(imageId)),
      destroyInstance: held('destroyInstance', async ({ instanceUuid }) => {
        delete powerStates[instanceUuid];
      }),
      spawnInstance: held('spawnInstance', async () => PowerState.RUNNING),
      powerOnInstance: held('powerOnInstance', async () => PowerState.RUNNING),
      listInstancePowerStates: async () => ({ ...powerStates }),
    });
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  async function run(action: Action, instanceUuid: string, extra: object = {}): Promise<Instance> {
    const handle = await startAction(stack.client, stack.config, action, { instanceUuid, ...extra });
    return (await handle.result()) as Instance;
  }

  /** An instance in `state`, built and shelved on the stub host. */
  async function instanceIn(state: VmState): Promise<string> {
    const { uuid } = await stub.buildInstance();
    if (state === VmState.SHELVED) {
      await run('shelve', uuid, { shelvedOffloadTime: -1 });
      // Its domain stays, shut off, as a real shelve leaves it.
      powerStates[uuid] = PowerState.SHUTDOWN;
    }
    if (state === VmState.SHELVED_OFFLOADED) await run('shelve', uuid, { shelvedOffloadTime: 0 });
    return uuid;
  }

  /** Starts the action with `step` held, and resolves once that step runs. */
  async function interruptedAt(testCase: Case): Promise<{ instanceUuid: string; handle: WorkflowHandle }> {
    const instanceUuid = testCase.from === 'none' ? randomUUID() : await instanceIn(testCase.from);
    let reached!: () => void;
    const atStep = new Promise<void>((resolve) => (reached = resolve));
    holding = { step: testCase.step, reached };
    const handle =
      testCase.from === 'none'
        ? await stub.startBuild({ instanceUuid })
        : await startAction(stack.client, stack.config, testCase.action, {
            instanceUuid,
            ...(testCase.action === 'shelve' ? { shelvedOffloadTime: -1 } : {}),
          });
    await atStep;
    holding = null;
    return { instanceUuid, handle };
  }

  /** The instance is free and in a settled state, and only the snapshot it needs is in Glance. */
  async function expectSettled(instanceUuid: string, testCase: Case): Promise<Instance> {
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance.taskState).toBeNull();
    expect(testCase.settled).toContain(instance.vmState);
    const needed = instance.systemMetadata.shelved_image_id;
    const snapshots = await stack.glance.listImages(stack.glance.snapshotContext, { name: 'wf-shelved' });
    const mine = snapshots.filter((image) => image.instance_uuid === instanceUuid).map((image) => image.id);
    expect(mine).toEqual(needed ? [needed] : []);
    return instance;
  }

  /** The next actions succeed from where the instance settled, and it can be deleted. */
  async function expectUsable(instance: Instance): Promise<void> {
    const { uuid } = instance;
    if (instance.vmState === VmState.ACTIVE) {
      expect(await run('shelve', uuid, { shelvedOffloadTime: 0 })).toMatchObject({ vmState: 'shelved_offloaded' });
    }
    if (instance.vmState !== VmState.ERROR) {
      expect(await run('unshelve', uuid)).toMatchObject({ vmState: 'active', taskState: null });
    }
    await run('delete', uuid);
    await expect(getInstance(stack.pool, uuid)).rejects.toMatchObject({ type: 'InstanceNotFound' });
  }

  describe.each(CASES)('$action at $step', (testCase) => {
    it('cancelled: settles itself, its action Cancelled', async () => {
      const { instanceUuid, handle } = await interruptedAt(testCase);
      await handle.cancel();
      await expect(handle.result()).rejects.toThrow();
      const instance = await expectSettled(instanceUuid, testCase);
      const [action] = await listInstanceActions(stack.pool, instanceUuid);
      expect(action).toMatchObject({
        action: testCase.action === 'build' ? 'create' : testCase.action,
        message: 'Cancelled',
      });
      await expectUsable(instance);
    });

    it('terminated: one reconcile settles it', async () => {
      const { instanceUuid, handle } = await interruptedAt(testCase);
      await handle.terminate('test: an operator terminates');
      expect((await getInstance(stack.pool, instanceUuid)).taskState).not.toBeNull();
      expect(await reconcileNow(stack, [instanceUuid])).toMatchObject({ claimsReleased: 1, failures: 0 });
      const instance = await expectSettled(instanceUuid, testCase);
      expect((await listInstanceActions(stack.pool, instanceUuid))[0]).toMatchObject({
        message: 'Error',
        reason: `released by the reconciler: workflow ${handle.workflowId} was TERMINATED`,
      });
      await expectUsable(instance);
    });
  });

  it('a claim whose workflow never started (the API stopped between its claim and the start): one reconcile frees it', async () => {
    const instanceUuid = await instanceIn(VmState.ACTIVE);
    const workflowId = `shelve-never-started-${randomUUID()}`;
    await claimInstance(stack.pool, { instanceUuid, action: 'shelve', requestId: `req-${randomUUID()}`, workflowId });
    expect(await reconcileNow(stack, [instanceUuid])).toMatchObject({ claimsReleased: 1, failures: 0 });
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance).toMatchObject({ vmState: 'active', taskState: null });
    expect((await listInstanceActions(stack.pool, instanceUuid))[0]).toMatchObject({
      action: 'shelve',
      message: 'Error',
      reason: `released by the reconciler: workflow ${workflowId} was NOT_FOUND`,
    });
    await expectUsable(instance);
  });

  it('an offload whose workflow ended with its domain shut off, not yet removed: one reconcile finishes it', async () => {
    const instanceUuid = await instanceIn(VmState.SHELVED);
    const { shelved_image_id: imageId } = (await getInstance(stack.pool, instanceUuid)).systemMetadata;
    // Shut off, as a destroy that outlived its terminated workflow leaves it for a moment.
    const workflowId = `shelveOffload-ended-${randomUUID()}`;
    await claimInstance(stack.pool, {
      instanceUuid,
      action: 'shelveOffload',
      requestId: `req-${randomUUID()}`,
      workflowId,
    });
    try {
      expect(await reconcileNow(stack, [instanceUuid])).toMatchObject({ claimsReleased: 1, failures: 0 });
    } finally {
      delete powerStates[instanceUuid];
    }
    const instance = await getInstance(stack.pool, instanceUuid);
    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(instance.systemMetadata.shelved_image_id).toBe(imageId);
    expect((await listInstanceActions(stack.pool, instanceUuid))[0]).toMatchObject({
      action: 'shelveOffload',
      message: 'Error',
      reason: `released by the reconciler: workflow ${workflowId} was NOT_FOUND`,
    });
    await expectUsable(instance);
  });
});
