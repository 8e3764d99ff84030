// Shelve-offload as its own action (docs/nova-behaviour.md §1.5, transitions O1 and O2), on a stub compute host.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

describe('shelveOffloadInstance', () => {
  let stack: TestStack;
  let stub: StubHost;
  const destroyed: string[] = [];

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack, {
      async destroyInstance({ instanceUuid }) {
        destroyed.push(instanceUuid);
      },
    });
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  it('offloads a SHELVED instance: host freed, image and shelve metadata kept, logged as its own action', async () => {
    const { uuid: instanceUuid } = await stub.buildInstance();
    const shelve = await startAction(stack.client, stack.config, 'shelve', { instanceUuid, shelvedOffloadTime: -1 });
    const shelved = (await shelve.result()) as Instance;

    const offload = await startAction(stack.client, stack.config, 'shelveOffload', {
      instanceUuid,
      userId: 'admin',
      projectId: 'admin-project',
    });
    const offloaded = (await offload.result()) as Instance;
    expect(offloaded).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      powerState: 4,
      host: null,
      node: null,
      availabilityZone: null,
    });
    expect(destroyed).toContain(instanceUuid);
    expect(offloaded.systemMetadata.shelved_image_id).toBe(shelved.systemMetadata.shelved_image_id);
    expect(await stack.glance.getImage(testOwner, shelved.systemMetadata.shelved_image_id!)).toMatchObject({
      status: 'active',
    });
    const [action] = await listInstanceActions(stack.pool, instanceUuid);
    expect(action).toMatchObject({
      action: 'shelveOffload',
      userId: 'admin',
      projectId: 'admin-project',
      message: null,
    });
    expect(action!.events.map(({ event, result }) => `${event}:${result}`)).toEqual([
      'compute_shelve_offload_instance:Success',
    ]);
  });

  it('refuses an instance that is not SHELVED', async () => {
    const { uuid: instanceUuid } = await stub.buildInstance();
    const handle = await startAction(stack.client, stack.config, 'shelveOffload', { instanceUuid });
    await expect(handle.result()).rejects.toMatchObject({
      cause: {
        type: 'InstanceInvalidState',
        message: `Cannot 'shelveOffload' instance ${instanceUuid} while it is in vm_state active`,
      },
    });
  });
});
