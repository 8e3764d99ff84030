// Two compute hosts on this machine's libvirtd, each with its own task queue and instance
// folder: a VM shelved and offloaded on one comes back on the other with the same bytes.
import { existsSync } from 'node:fs';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instanceDirectory } from '../../lib/host-paths.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { buildKnownVm, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestComputeHost, type TestStack } from '../support/stack.js';

describe('a VM moving between two hosts through shelve-offload and unshelve', () => {
  let stack: TestStack;
  let second: TestComputeHost;
  let vm: KnownVm;

  beforeAll(async () => {
    stack = await startTestStack();
    second = await stack.addComputeHost(`${stack.config.compute.host}-b`);
    vm = await buildKnownVm(stack, stack.config.compute.host);
  });

  afterAll(async () => {
    if (vm) {
      await second.removeInstance(vm.instanceUuid);
      await vm.remove();
    }
    await stack?.stop();
  });

  it('is shelved on the first host and unshelved on the second, its disk intact and its port kept', async () => {
    const { instanceUuid } = vm;
    const [port] = (await getInstance(stack.pool, instanceUuid)).ports;
    expect(port).toMatchObject({ network: 'private', bindingHost: stack.config.compute.host });
    expect(port!.macAddress).toMatch(/^fa:16:3e(:[0-9a-f]{2}){3}$/);
    const shelve = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid,
      shutdownTimeout: 0,
      shelvedOffloadTime: 0,
    });
    const offloaded = (await shelve.result()) as Instance;
    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', host: null });
    // As in Nova, an offload keeps the port, still bound to the old host.
    expect(offloaded.ports).toEqual([port]);
    expect(existsSync(instanceDirectory(stack.config.compute.instancesPath, instanceUuid))).toBe(false);

    const unshelve = await startAction(stack.client, stack.config, 'unshelve', {
      instanceUuid,
      host: second.config.compute.host,
    });
    const instance = (await unshelve.result()) as Instance;
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, host: second.config.compute.host });
    expect(instance.systemMetadata).not.toHaveProperty('shelved_host');
    expect(existsSync(instanceDirectory(second.config.compute.instancesPath, instanceUuid))).toBe(true);
    const domain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await domain!.getInfo()).state).toBe(DomainState.RUNNING);
    expect(await vm.diskIsIntact(second.config)).toBe(true);
    expect(instance.ports).toEqual([{ ...port, bindingHost: second.config.compute.host }]);
    expect(await domain!.getXMLDesc()).toContain(`<mac address='${port!.macAddress}'/>`);
  });
});
