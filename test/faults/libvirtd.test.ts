// libvirtd restarted while a shelve powers the domain off (the guests keep running; the
// daemon's connections do not): the compute worker reconnects and the action completes, with no
// domain left behind and the guest's bytes intact after an unshelve.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { startShelve, startStack, stopService } from '../support/faults.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

describe('libvirtd restarted mid-shelve', () => {
  let stack: TestStack;
  let vm: KnownVm;

  beforeAll(async () => {
    stack = await startTestStack();
    vm = await buildKnownVm(stack, stack.config.compute.host);
  });

  afterAll(async () => {
    await startStack();
    await vm?.remove();
    await stack?.stop();
  });

  it('while the domain is powered off: the shelve completes, then the unshelve, the disk intact', async () => {
    const { instanceUuid } = vm;
    // A guest with no OS ignores the shutdown request: 4 s of waiting for it to restart libvirtd in.
    const shelve = await startShelve(stack, instanceUuid, 4);
    while ((await getInstance(stack.pool, instanceUuid)).taskState !== 'shelving') await sleep(50);
    await sleep(1000);
    await stopService('libvirtd');
    await startStack();

    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(await stack.libvirt.lookupInstance(instanceUuid)).toBeNull();
    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid });
    expect(await unshelve.result()).toMatchObject({ vmState: 'active', taskState: null, powerState: 1 });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });
});
