// The host's disk fills up while a shelve flattens the root disk into its snapshot: the shelve
// fails at once with the reason, deletes its image, leaves no partial file, and the instance is
// as the shelve found it: ACTIVE, its guest running again, its bytes intact.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instanceDirectory } from '../../lib/host-paths.js';
import { getInstance } from '../../lib/db/instances.js';
import { type Config, loadConfig } from '../../lib/config.js';
import { startShelve } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startWorkerProcess, type WorkerProcess } from '../support/worker-process.js';

const run = promisify(execFile);

describe('the host disk full during a snapshot', () => {
  let stack: TestStack;
  let vm: KnownVm;
  let config: Config;
  let compute: WorkerProcess;
  const host = `disk-full-${randomUUID().slice(0, 8)}`;
  // A small filesystem of its own for the host's instances: room for the 1 GiB boot image
  // and the instance's overlay, not for the flattened snapshot too.
  const mountPoint = path.join(tmpdir(), `vm-shelve-${host}`);

  beforeAll(async () => {
    await mkdir(mountPoint, { recursive: true });
    await run('mount', ['-t', 'tmpfs', '-o', 'size=1300m', 'tmpfs', mountPoint]);
    stack = await startTestStack();
    // Its 1 GiB of disk overcommitted, so that the scheduler places the 2 GiB root disk here.
    const env = { COMPUTE_HOST: host, INSTANCES_PATH: path.join(mountPoint, 'instances'), DISK_ALLOCATION_RATIO: '4' };
    config = loadConfig({ ...process.env, ...env });
    compute = await startWorkerProcess('compute', env);
    vm = await buildKnownVm(stack, host, { sizeMiB: 2048, flavor: { rootGb: 2 } });
  });

  afterAll(async () => {
    await vm?.remove(config);
    await compute?.stop();
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = $1', [host]);
    await stack?.stop();
    await run('umount', [mountPoint]).catch(() => undefined);
    await rm(mountPoint, { recursive: true, force: true });
  });

  it('fails the shelve cleanly and leaves the instance running as it was', async () => {
    const { instanceUuid } = vm;
    const handle = await startShelve(stack, instanceUuid);
    const error = (await handle.result().catch((failure: unknown) => failure)) as WorkflowFailedError;
    expect(error).toBeInstanceOf(WorkflowFailedError);
    expect(error.cause).toMatchObject({
      type: 'HostDiskFull',
      message: `Host ${host} has no space left in ${config.compute.instancesPath} for the snapshot of instance ${instanceUuid}.`,
    });

    expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({
      vmState: 'active',
      taskState: null,
      powerState: 1,
      host,
    });
    const domain = await stack.libvirt.lookupInstance(instanceUuid);
    expect((await domain!.getInfo()).state).toBe(DomainState.RUNNING);
    expect(await stack.glance.listImages(e2eOwner, { name: `${vm.displayName}-shelved` })).toEqual([]);
    // The disk and the guest's console log, nothing half-written.
    expect((await readdir(instanceDirectory(config.compute.instancesPath, instanceUuid))).sort()).toEqual([
      'console.log',
      'disk',
    ]);
    expect(await vm.diskIsIntact(config)).toBe(true);
  });
});
