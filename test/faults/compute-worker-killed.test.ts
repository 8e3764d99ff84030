// The compute worker killed with SIGKILL in the middle of moving a disk, then started again, as
// after a host crash: the action finishes on its own, the guest's bytes are intact, and nothing
// is left behind or made twice (no second image in Glance, no partial file, no domain left over).
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WorkflowHandle } from '@temporalio/client';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { instanceDirectory } from '../../lib/host-paths.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { type Config, loadConfig } from '../../lib/config.js';
import type { Instance } from '../../lib/nova.js';
import { expectSingleSnapshot, midTransfer, startShelve } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startWorkerProcess, type WorkerProcess } from '../support/worker-process.js';

describe('the compute worker killed mid-transfer', () => {
  let stack: TestStack;
  let hostConfig: Config;
  let worker: WorkerProcess;
  let vm: KnownVm;
  const host = `crash-${randomUUID().slice(0, 8)}`;

  async function crashAndRestart(handle: WorkflowHandle, step: 'upload' | 'download'): Promise<Instance> {
    const bytesDone = await midTransfer(handle, step);
    await worker.kill();
    await sleep(3000);
    worker = await startWorkerProcess('compute', {
      COMPUTE_HOST: host,
      INSTANCES_PATH: hostConfig.compute.instancesPath,
    });
    expect(bytesDone).toBeGreaterThan(0);
    // The step is retried once its heartbeat is missed (30 s), on the restarted worker.
    return (await handle.result()) as Instance;
  }

  beforeAll(async () => {
    stack = await startTestStack();
    const env = { COMPUTE_HOST: host, INSTANCES_PATH: `${stack.config.compute.instancesPath}-${host}` };
    hostConfig = loadConfig({ ...process.env, ...env });
    worker = await startWorkerProcess('compute', env);
    // 2 GiB of virtual disk with 1 GiB of random data: seconds of transfer, time to be killed in.
    vm = await buildKnownVm(stack, host, { sizeMiB: 2048, flavor: { rootGb: 2 } });
  }, 300_000);

  afterAll(async () => {
    await vm?.remove(hostConfig);
    await worker?.stop();
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = $1', [host]);
    await stack?.stop();
  }, 120_000);

  // One journey on one 2 GiB VM, the unshelve bringing back what the shelve took; each crash
  // waits out a 30 s heartbeat, hence the longer timeout.
  it('during the snapshot upload, then during the image download: the shelve and the unshelve complete', async () => {
    const { instanceUuid } = vm;
    const shelve = await startShelve(stack, instanceUuid);
    const offloaded = await crashAndRestart(shelve, 'upload');

    // The shelve completes, with one image and no domain left.
    expect(offloaded, 'after the shelve').toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    await expectSingleSnapshot(stack, vm);
    expect(await stack.libvirt.lookupInstance(instanceUuid), 'the domain after the shelve').toBeNull();
    expect(
      existsSync(instanceDirectory(hostConfig.compute.instancesPath, instanceUuid)),
      'the files after the shelve',
    ).toBe(false);
    const [shelveAction] = await listInstanceActions(stack.pool, instanceUuid);
    expect(shelveAction, 'the shelve action').toMatchObject({ action: 'shelve', message: null });
    expect(
      shelveAction!.events.map((event) => [event.event, event.result]),
      'the shelve steps',
    ).toContainEqual(['compute_snapshot_instance', 'Success']);

    const imageId = (await getInstance(stack.pool, instanceUuid)).systemMetadata.shelved_image_id!;
    const unshelve = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid, host });
    const active = await crashAndRestart(unshelve, 'download');

    // The unshelve completes, the domain running, the same bytes.
    expect(active, 'after the unshelve').toMatchObject({ vmState: 'active', taskState: null, powerState: 1, host });
    // The interrupted download left no partial file behind: the disk and the guest's console log.
    expect(
      (await readdir(instanceDirectory(hostConfig.compute.instancesPath, instanceUuid))).sort(),
      'the files after the unshelve',
    ).toEqual(['console.log', 'disk']);
    const domain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await domain!.getInfo()).state, 'the domain after the unshelve').toBe(DomainState.RUNNING);
    expect(await stack.glance.getImage(e2eOwner, imageId), 'the snapshot after the unshelve').toBeNull();
    expect(await vm.diskIsIntact(hostConfig), 'the disk after the unshelve').toBe(true);
  }, 360_000);
});
