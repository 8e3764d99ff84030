// Shelve starts from active, stopped, paused and suspended (docs/nova-behaviour.md §1.2), and a paused guest is
// always powered off hard (docs/nova-behaviour.md §8.5). vm-shelve has no stop or pause action of its own, so the
// test puts the instance in those states in the database.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { type Instance, PowerState, VmState } from '../../lib/nova.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

describe('shelve from each state it may start from', () => {
  let stack: TestStack;
  let stub: StubHost;
  const shutdownTimeouts = new Map<string, number>();

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack, {
      async powerOffInstance({ instanceUuid, timeout }) {
        shutdownTimeouts.set(instanceUuid, timeout);
        return PowerState.SHUTDOWN;
      },
    });
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  it.each([
    [VmState.ACTIVE, PowerState.RUNNING, 30],
    [VmState.STOPPED, PowerState.SHUTDOWN, 30],
    [VmState.SUSPENDED, PowerState.SUSPENDED, 30],
    [VmState.PAUSED, PowerState.PAUSED, 0],
  ])('from %s (power_state %i): SHELVED, clean shutdown allowed for %is', async (vmState, powerState, timeout) => {
    const { uuid } = await stub.buildInstance();
    await stack.pool.query('UPDATE instances SET vm_state = $2, power_state = $3 WHERE uuid = $1', [
      uuid,
      vmState,
      powerState,
    ]);
    const handle = await startAction(stack.client, stack.config, 'shelve', {
      instanceUuid: uuid,
      shutdownTimeout: 30,
      shelvedOffloadTime: -1,
    });
    expect((await handle.result()) as Instance).toMatchObject({ vmState: 'shelved', taskState: null, powerState: 4 });
    expect(shutdownTimeouts.get(uuid)).toBe(timeout);
  });

  it.each([VmState.BUILDING, VmState.ERROR, VmState.SHELVED, VmState.SHELVED_OFFLOADED])(
    'refuses to shelve from %s',
    async (vmState) => {
      const { uuid } = await stub.buildInstance();
      await stack.pool.query('UPDATE instances SET vm_state = $2 WHERE uuid = $1', [uuid, vmState]);
      const handle = await startAction(stack.client, stack.config, 'shelve', { instanceUuid: uuid });
      await expect(handle.result()).rejects.toMatchObject({
        cause: {
          type: 'InstanceInvalidState',
          message: `Cannot 'shelve' instance ${uuid} while it is in vm_state ${vmState}`,
        },
      });
    },
  );

  it.each([
    ['shelvedOffloadTime', 'soon', 'shelvedOffloadTime must be a whole number of seconds >= -1, got "soon"'],
    ['shutdownTimeout', -5, 'shutdownTimeout must be a whole number of seconds >= 0, got -5'],
  ])('refuses %s = %j before it claims anything', async (name, value, message) => {
    const { uuid } = await stub.buildInstance();
    const handle = await stack.client.workflow.start('shelveInstance', {
      taskQueue: stack.config.temporal.conductorTaskQueue,
      workflowId: `shelve-${uuid}`,
      args: [{ instanceUuid: uuid, [name]: value }],
    });
    await expect(handle.result()).rejects.toMatchObject({
      cause: { type: 'InvalidInput', message: `shelveInstance: ${message}` },
    });
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null });
  });
});
