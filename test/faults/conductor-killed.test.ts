// The conductor worker (workflows, database and Glance steps) killed with SIGKILL while a
// compute step runs, and started again: the workflow resumes from its history on the new
// process, and the shelve and the unshelve both complete with the guest's bytes intact.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { type Config, loadConfig } from '../../lib/config.js';
import type { TaskState } from '../../lib/nova.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { startWorkerProcess, type WorkerProcess } from '../support/worker-process.js';

describe('the conductor worker killed between steps', () => {
  let stack: TestStack;
  let vm: KnownVm;
  let config: Config;
  let conductor: WorkerProcess;
  let compute: WorkerProcess;
  const name = `conductor-crash-${randomUUID().slice(0, 8)}`;
  // Its own task queue and host, served only by the worker processes this test kills.
  const env = { CONDUCTOR_TASK_QUEUE: name, COMPUTE_HOST: name };

  /** Kills the conductor once the instance is in `taskState`, and starts it again 2 s later. */
  async function killConductorIn(taskState: TaskState | string): Promise<void> {
    while ((await getInstance(stack.pool, vm.instanceUuid)).taskState !== taskState) await sleep(50);
    await conductor.kill();
    await sleep(2000);
    conductor = await startWorkerProcess('conductor', env);
  }

  beforeAll(async () => {
    stack = await startTestStack();
    config = loadConfig({ ...process.env, ...env, INSTANCES_PATH: `${stack.config.compute.instancesPath}-${name}` });
    conductor = await startWorkerProcess('conductor', env);
    compute = await startWorkerProcess('compute', { ...env, INSTANCES_PATH: config.compute.instancesPath });
    vm = await buildKnownVm(stack, name);
  });

  afterAll(async () => {
    await vm?.remove(config);
    await Promise.all([conductor?.stop(), compute?.stop()]);
    await stack?.pool.query('DELETE FROM compute_nodes WHERE host = $1', [name]);
    await stack?.stop();
  });

  it('during the power-off of a shelve, and the spawn of an unshelve: both complete, the disk intact', async () => {
    const { instanceUuid } = vm;
    // A guest with no OS ignores the shutdown request: 4 s in the power-off step to kill in.
    const shelve = await startAction(stack.client, config, 'shelve', {
      instanceUuid,
      shutdownTimeout: 4,
      shelvedOffloadTime: 0,
    });
    await killConductorIn('shelving');
    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    const imageId = (await getInstance(stack.pool, instanceUuid)).systemMetadata.shelved_image_id;
    const images = await stack.glance.listImages(e2eOwner, { name: `${vm.displayName}-shelved` });
    expect(images.map((image) => image.id)).toEqual([imageId]);

    const unshelve = await startAction(stack.client, config, 'unshelve', { instanceUuid, host: name });
    await killConductorIn('spawning');
    expect(await unshelve.result()).toMatchObject({ vmState: 'active', taskState: null, powerState: 1, host: name });
    expect(await vm.diskIsIntact(config)).toBe(true);
    const actions = await listInstanceActions(stack.pool, instanceUuid);
    expect(actions.map((action) => [action.action, action.message])).toEqual([
      ['unshelve', null],
      ['shelve', null],
      ['create', null],
    ]);
  });
});
