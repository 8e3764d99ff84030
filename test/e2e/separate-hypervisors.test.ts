// Two hypervisors that share nothing but the network (scripts/hypervisor): each in network and
// mount namespaces of its own, with its own libvirtd, instances folder and compute worker, which
// reaches Temporal, PostgreSQL and Glance at the far end of its veth pair. A server of the test
// guest built on one is shelved, offloaded and unshelved on the other, where its guest reads back
// the bytes it wrote. A second worker claiming a running hypervisor's name is refused.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAction } from '../../lib/actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { guestImage } from '../../lib/guest-protocol.js';
import { bridgeName, domainName } from '../../lib/libvirt.js';
import type { Instance } from '../../lib/nova.js';
import { uploadBootImage } from '../../lib/sample-disk.js';
import { computeTaskQueue } from '../../lib/temporal.js';
import { type Hypervisor, hypervisorUp } from '../support/hypervisor.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import type { WorkerProcess } from '../support/worker-process.js';

const owner = { projectId: 'e2e-hypervisors', userId: 'e2e-user' };
const flavor = { flavorid: '1', name: 'm1.small', vcpus: 1, memoryMb: 256, rootGb: 1, ephemeralGb: 0, swap: 0 };

/** The names of a hypervisor's domains, defined or running, as its own libvirtd lists them. */
async function domains(hypervisor: Hypervisor): Promise<string[]> {
  const names = await hypervisor.exec(['virsh', '-q', '-c', 'qemu:///system', 'list', '--all', '--name']);
  return names.split('\n').filter(Boolean);
}

/** The libvirt networks on a hypervisor. */
async function networks(hypervisor: Hypervisor): Promise<string[]> {
  const names = await hypervisor.exec(['virsh', '-q', '-c', 'qemu:///system', 'net-list', '--all', '--name']);
  return names.split('\n').filter(Boolean);
}

/** The instance folders in a hypervisor's instances folder (its image cache, _base, aside). */
async function instanceFolders(hypervisor: Hypervisor): Promise<string[]> {
  const entries = await hypervisor.exec(['ls', '-A', hypervisor.workerEnv.INSTANCES_PATH!]);
  return entries.split('\n').filter((entry) => entry && entry !== '_base');
}

describe('two hypervisors that share nothing but the network', () => {
  let stack: TestStack;
  const hypervisors: Hypervisor[] = [];
  const workers = new Map<string, WorkerProcess>();
  const imageId = randomUUID();
  const servers: string[] = [];

  async function run(action: 'build' | 'shelve' | 'shelveOffload' | 'unshelve' | 'delete', input: object) {
    const handle = await startAction(stack.client, stack.config, action, input as never);
    return (await handle.result()) as Instance;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    for (const [index, name] of ['hv-a', 'hv-b'].entries()) {
      const hypervisor = await hypervisorUp(name, index + 1);
      hypervisors.push(hypervisor);
      workers.set(name, await hypervisor.startComputeWorker());
    }
    await uploadBootImage(stack.glance, owner, await guestImage(), { id: imageId, name: 'vm-shelve-guest' });
  });

  afterAll(async () => {
    for (const uuid of servers) {
      if (!(await getInstance(stack.pool, uuid).catch(() => null))) continue;
      await run('delete', { instanceUuid: uuid }).catch(async () => {
        // Its hypervisor goes below, with everything on it.
        await stack.pool.query('DELETE FROM instances WHERE uuid = $1', [uuid]);
      });
    }
    await stack?.glance.deleteImage(owner, imageId).catch(() => undefined);
    for (const worker of workers.values()) await worker.stop();
    for (const hypervisor of hypervisors) await hypervisor.down();
    // Gone for good: no later test's scheduler may pick them.
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = ANY($1)', [['hv-a', 'hv-b']]);
    await stack?.stop();
  });

  it("a hypervisor reaches the control plane only over its veth: the stack's folder is out of its sight", async () => {
    for (const [index, hypervisor] of hypervisors.entries()) {
      const gateway = `10.251.${index + 1}.1`;
      expect(hypervisor.workerEnv).toMatchObject({
        COMPUTE_HOST: hypervisor.name,
        LIBVIRT_URI: 'qemu:///system',
        TEMPORAL_ADDRESS: `${gateway}:7233`,
        DATABASE_URL: expect.stringContaining(`@${gateway}:`),
        GLANCE_URL: `http://${gateway}:9292`,
      });
      // Its mount namespace shows an empty folder where the stack keeps its state.
      expect(await hypervisor.exec(['ls', '-A', '.stack'])).toBe('');
      expect(await hypervisor.exec(['ip', '-4', '-o', 'address', 'show', 'eth0'])).toContain(
        `${hypervisor.address}/30`,
      );
    }
  });

  it('a second worker claiming a running hypervisor’s host name is refused, and the first one keeps its host', async () => {
    const [, hvB] = hypervisors;
    await expect(hvB!.startComputeWorker({ COMPUTE_HOST: 'hv-a' })).rejects.toThrow(
      /Another compute worker already runs as host hv-a .*two workers of one host would share its task queue/,
    );
    // The first worker still polls its host's queue.
    const first = workers.get('hv-a')!;
    process.kill(first.pid, 0);
    const { pollers } = await stack.client.workflowService.describeTaskQueue({
      namespace: stack.config.temporal.namespace,
      taskQueue: { name: computeTaskQueue('hv-a') },
      taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    });
    expect(pollers.map((poller) => poller.identity)).toContainEqual(expect.stringMatching(`^${first.pid}@`));
  });

  it('a server built on one hypervisor is shelved, offloaded and unshelved on the other, its guest reading back the bytes it wrote', async () => {
    const [hvA, hvB] = hypervisors as [Hypervisor, Hypervisor];
    const instanceUuid = randomUUID();
    servers.push(instanceUuid);
    const domain = domainName(instanceUuid);
    let instance = await run('build', {
      instanceUuid,
      displayName: `hv-${instanceUuid.slice(0, 8)}`,
      ...owner,
      imageRef: imageId,
      flavor,
      host: hvA.name,
    });
    expect(instance).toMatchObject({ vmState: 'active', host: hvA.name });
    const { address, networkId } = instance.ports[0]!.fixedIp!;
    expect(await domains(hvA)).toEqual([domain]);
    // The guest's network is on its hypervisor only: its bridge is there, not on this machine.
    expect(await hvA.exec(['ls', '/sys/class/net'])).toContain(bridgeName(networkId));
    expect(existsSync(`/sys/class/net/${bridgeName(networkId)}`)).toBe(false);
    let guest = await hvA.guest(address);
    expect(await guest.ping()).toBe(address);
    const content = randomBytes(64 * 1024);
    expect(await guest.write('moved.bin', content)).toBe(createHash('sha256').update(content).digest('hex'));
    guest.close();

    instance = await run('shelve', { instanceUuid, shelvedOffloadTime: -1 });
    expect(instance).toMatchObject({ vmState: 'shelved', host: hvA.name });
    instance = await run('shelveOffload', { instanceUuid });
    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', host: null });
    expect(await domains(hvA)).toEqual([]);
    expect(await instanceFolders(hvA)).toEqual([]);
    expect(await networks(hvA)).toEqual([]);
    // This machine's own libvirtd never had the domain: none there, and no QEMU log of it.
    expect(await stack.libvirt.lookupInstance(instanceUuid)).toBeNull();
    expect(existsSync(`/var/log/libvirt/qemu/${domain}.log`)).toBe(false);
    expect(await hvA.exec(['ls', '/var/log/libvirt/qemu'])).toContain(`${domain}.log`);

    instance = await run('unshelve', { instanceUuid, host: hvB.name });
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, host: hvB.name });
    expect(instance.ports[0]!.fixedIp!.address).toBe(address);
    expect(await domains(hvB)).toEqual([domain]);
    guest = await hvB.guest(address);
    expect(await guest.ping()).toBe(address);
    expect((await guest.read('moved.bin'))?.equals(content)).toBe(true);
    guest.close();

    await run('delete', { instanceUuid });
    for (const hypervisor of [hvA, hvB]) {
      expect(await domains(hypervisor)).toEqual([]);
      expect(await instanceFolders(hypervisor)).toEqual([]);
      expect(await networks(hypervisor)).toEqual([]);
    }
    expect(await stack.libvirt.lookupInstance(instanceUuid)).toBeNull();
  }, 300_000);
});
