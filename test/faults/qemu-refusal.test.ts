// A hypervisor that refuses the domain, with the real compute activities on the real libvirtd and
// QEMU: the action fails at once (one attempt, not ten) and rolls back as docs/guarantees.md promises. And
// the fence: a domain another request defined is never started in the instance's place.
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { type WorkflowHandle, WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { domainRequestId } from '../../lib/libvirt.js';
import type { Instance } from '../../lib/nova.js';
import { expectSingleSnapshot, startShelve, expectOffHost } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/** The ApplicationFailure of `type` in the failure's cause chain. */
function failureOfType(error: unknown, type: string): ApplicationFailure | undefined {
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    if (cause instanceof ApplicationFailure && cause.type === type) return cause;
  }
  return undefined;
}

/** The attempt of the action's spawnInstance that the history recorded last. */
async function spawnAttempts(handle: WorkflowHandle): Promise<number[]> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = events
    .filter((event) => event.activityTaskScheduledEventAttributes?.activityType?.name === 'spawnInstance')
    .map((event) => String(event.eventId));
  return events
    .filter((event) => scheduled.includes(String(event.activityTaskStartedEventAttributes?.scheduledEventId)))
    .map((event) => event.activityTaskStartedEventAttributes!.attempt!);
}

async function failureOf(handle: WorkflowHandle): Promise<unknown> {
  const error = await handle.result().then(
    () => null,
    (failure: unknown) => failure,
  );
  expect(error).toBeInstanceOf(WorkflowFailedError);
  return error;
}

describe('a domain the hypervisor refuses', () => {
  let stack: TestStack;
  let vm: KnownVm;
  let host: string;

  beforeAll(async () => {
    // Capacity on paper for flavors this 2-core host cannot start: the scheduler lets them through
    // to the hypervisor, which is what is tested.
    stack = await startTestStack({ CPU_ALLOCATION_RATIO: '200', RAM_ALLOCATION_RATIO: '8' });
    host = stack.config.compute.host;
    vm = await buildKnownVm(stack, host);
  }, 300_000);

  afterAll(async () => {
    await vm?.remove();
    await stack?.stop();
  });

  it("a build of more vCPUs than QEMU's 'pc' machine takes: ERROR at once, off its host, no domain", async () => {
    const instanceUuid = randomUUID();
    try {
      const handle = await startAction(stack.client, stack.config, 'build', {
        instanceUuid,
        displayName: 'too-many-vcpus',
        ...e2eOwner,
        imageRef: vm.bootImageId,
        flavor: { flavorid: 'x', name: 'x.300', vcpus: 300, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
        host,
      });
      const refused = failureOfType(await failureOf(handle), 'HypervisorRefused');
      expect(refused?.nonRetryable).toBe(true);
      expect(refused?.message).toContain(`of instance ${instanceUuid} on host ${host}`);
      expect(refused?.message).toContain('Maximum CPUs greater than specified machine type limit');
      expect(await spawnAttempts(handle)).toEqual([1]);

      expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({
        vmState: 'error',
        taskState: null,
        host: null,
      });
      await expectOffHost(stack, instanceUuid);
    } finally {
      await stack.compute.removeInstance(instanceUuid);
    }
  });

  it('an unshelve whose guest memory QEMU cannot allocate: SHELVED_OFFLOADED at once, the image kept', async (context) => {
    // With overcommit_memory=1 the kernel grants any allocation, and QEMU starts such a guest.
    if ((await readFile('/proc/sys/vm/overcommit_memory', 'utf8')).trim() === '1') context.skip();
    const shelve = await startShelve(stack, vm.instanceUuid);
    expect(await shelve.result()).toMatchObject({ vmState: 'shelved_offloaded' });
    const { memoryMb } = (await getInstance(stack.pool, vm.instanceUuid)).flavor;
    const tooMuch = Math.ceil((3 * totalmem()) / 1024 ** 2);
    await stack.pool.query('UPDATE instances SET memory_mb = $2 WHERE uuid = $1', [vm.instanceUuid, tooMuch]);

    const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    const refused = failureOfType(await failureOf(handle), 'HypervisorRefused');
    expect(refused?.nonRetryable).toBe(true);
    expect(refused?.message).toMatch(/cannot set up guest memory 'pc.ram': Cannot allocate memory/);
    expect(await spawnAttempts(handle)).toEqual([1]);

    expect(await getInstance(stack.pool, vm.instanceUuid)).toMatchObject({
      vmState: 'shelved_offloaded',
      taskState: null,
      host: null,
    });
    expect(await stack.libvirt.lookupInstance(vm.instanceUuid)).toBeNull();
    await expectSingleSnapshot(stack, vm);

    // With a flavor the host can start, the same unshelve succeeds and brings the bytes back.
    await stack.pool.query('UPDATE instances SET memory_mb = $2 WHERE uuid = $1', [vm.instanceUuid, memoryMb]);
    const again = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
    expect((await again.result()) as Instance).toMatchObject({ vmState: 'active', taskState: null });
    expect(await vm.diskIsIntact(stack.config)).toBe(true);
  });

  it('a domain another request defined is replaced, one of the same request is reused', async () => {
    const compute = createComputeActivities(stack.config.compute, stack.libvirt, stack.glance);
    const instance = await getInstance(stack.pool, vm.instanceUuid);
    const spawn = (requestId: string) =>
      new MockActivityEnvironment().run(compute.spawnInstance, {
        instance,
        requestId,
        root: { kind: 'overlay' as const, imageId: vm.bootImageId },
      });
    const requestOf = async () =>
      domainRequestId(await (await stack.libvirt.lookupInstance(vm.instanceUuid))!.getXMLDesc());
    expect(await requestOf()).toMatch(/^req-/);
    const staleId = await (await stack.libvirt.lookupInstance(vm.instanceUuid))!.getID();

    // The instance's running domain is a given-up attempt's, as far as this request knows.
    const requestId = `req-${randomUUID()}`;
    expect(await spawn(requestId)).toBe(1);
    const fenced = await stack.libvirt.lookupInstance(vm.instanceUuid);
    expect(await requestOf()).toBe(requestId);
    const runningId = await fenced!.getID();
    expect(runningId).not.toBe(staleId);

    // A retry of the same request starts nothing anew: the domain QEMU runs is the same one.
    expect(await spawn(requestId)).toBe(1);
    expect(await requestOf()).toBe(requestId);
    expect(await (await stack.libvirt.lookupInstance(vm.instanceUuid))!.getID()).toBe(runningId);
  });
});
