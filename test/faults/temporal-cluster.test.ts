// Faults only a production-shaped Temporal has (the stack's cluster profile): one history and one
// frontend process crash (SIGKILL) during a shelve's snapshot upload, and the PostgreSQL server
// under the whole cluster restarts during another. The surviving processes take over the dead
// ones' shards and clients; every action completes with one image and the guest's bytes intact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAction } from '../../lib/actions.js';
import {
  expectSingleSnapshot,
  midTransfer,
  restartPostgres,
  stackTemporal,
  startShelve,
  startStack,
  stopService,
} from '../support/faults.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe.runIf(stackTemporal === 'cluster')('the Temporal cluster losing processes mid-shelve', () => {
  let stack: TestStack;
  let vm: KnownVm;

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host, { sizeMiB: 2048, flavor: { rootGb: 2 } });
  }, 300_000);

  afterAll(async () => {
    await startStack();
    await vm?.remove();
    await stack?.stop();
  }, 120_000);

  async function shelveThenUnshelve(fault: () => Promise<void>): Promise<void> {
    const { instanceUuid } = vm;
    const shelve = await startShelve(stack, instanceUuid);
    await midTransfer(shelve, 'upload');
    await fault();
    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    await expectSingleSnapshot(stack, vm);
    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    expect(await unshelve.result()).toMatchObject({ vmState: 'active', taskState: null, powerState: 1 });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  }

  it('a history and a frontend process killed during the upload: the others finish it without them', async () => {
    await shelveThenUnshelve(async () => {
      await Promise.all([stopService('temporal-history-1', 'SIGKILL'), stopService('temporal-frontend-1', 'SIGKILL')]);
    });
    // Brought back only now: the shelve and the unshelve ran on the survivors alone.
    await startStack();
  });

  it('PostgreSQL restarted during the upload: the cluster and the workers reconnect', async () => {
    await shelveThenUnshelve(restartPostgres);
  });
});
