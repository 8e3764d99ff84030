// Unshelve scheduling with availability zones and named hosts (docs/nova-behaviour.md §5.2, Nova 2.77 and 2.91),
// on two stub hosts in zones of their own.
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

describe('where an offloaded instance is unshelved', () => {
  let stack: TestStack;
  let a: StubHost;
  let b: StubHost;
  const zoneA = `az-a-${randomUUID().slice(0, 8)}`;
  const zoneB = `az-b-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    stack = await startTestStack();
    a = await startStubHost(stack, {}, { availabilityZone: zoneA });
    b = await startStubHost(stack, {}, { availabilityZone: zoneB });
  });

  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    await stack?.stop();
  });

  async function run(action: 'shelve' | 'unshelve', input: Record<string, unknown> & { instanceUuid: string }) {
    const handle = await startAction(stack.client, stack.config, action, {
      ...(action === 'shelve' ? { shelvedOffloadTime: 0 } : {}),
      ...input,
    });
    return (await handle.result()) as Instance;
  }

  async function refused(input: Record<string, unknown> & { instanceUuid: string }) {
    const handle = await startAction(stack.client, stack.config, 'unshelve', input);
    const error = await handle.result().catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(WorkflowFailedError);
    return (error as WorkflowFailedError).cause;
  }

  it('stays in its pinned zone, moves to a requested zone and keeps it, and can be unpinned', async () => {
    const { uuid: instanceUuid } = await a.buildInstance({ availabilityZone: zoneA });
    await run('shelve', { instanceUuid });
    expect(await run('unshelve', { instanceUuid })).toMatchObject({ host: a.host, availabilityZone: zoneA });

    await run('shelve', { instanceUuid });
    expect(await run('unshelve', { instanceUuid, availabilityZone: zoneB })).toMatchObject({
      host: b.host,
      availabilityZone: zoneB,
      requestedAvailabilityZone: zoneB,
    });

    await run('shelve', { instanceUuid });
    expect(await run('unshelve', { instanceUuid, availabilityZone: null, host: a.host })).toMatchObject({
      host: a.host,
      availabilityZone: zoneA,
      requestedAvailabilityZone: null,
    });
  });

  it('refuses a named host outside the zone, and an unavailable zone, leaving the instance as it was', async () => {
    const { uuid: instanceUuid } = await b.buildInstance({ availabilityZone: zoneB });
    await run('shelve', { instanceUuid });
    const before = await getInstance(stack.pool, instanceUuid);

    expect(await refused({ instanceUuid, host: a.host })).toMatchObject({
      type: 'UnshelveHostNotInAZ',
      message: `Host "${a.host}" is not in the availability zone "${zoneB}".`,
    });
    expect(await refused({ instanceUuid, availabilityZone: 'nowhere' })).toMatchObject({
      type: 'InvalidRequest',
      message: 'The requested availability zone is not available: nowhere',
    });
    // Claimed and released, the record was touched (updated_at), and nothing else changed.
    expect({ ...(await getInstance(stack.pool, instanceUuid)), updatedAt: before.updatedAt }).toEqual(before);
  });

  it('refuses a zone or host for an instance that is SHELVED, not offloaded', async () => {
    const { uuid: instanceUuid } = await a.buildInstance({ availabilityZone: zoneA });
    await run('shelve', { instanceUuid, shelvedOffloadTime: -1 });
    expect(await refused({ instanceUuid, availabilityZone: zoneA })).toMatchObject({
      type: 'UnshelveInstanceInvalidState',
    });
    expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({ vmState: 'shelved', taskState: null });
  });

  it('says why no host fits', async () => {
    const zoneC = `az-c-${randomUUID().slice(0, 8)}`;
    const c = await startStubHost(stack, {}, { availabilityZone: zoneC, memoryMb: 1024 });
    try {
      const { uuid: instanceUuid } = await c.buildInstance({ availabilityZone: zoneC, memoryMb: 512 });
      await run('shelve', { instanceUuid });
      // Offloaded, it takes nothing: two new instances fill host C's 1024 MiB meanwhile.
      for (let i = 0; i < 2; i++) await c.buildInstance({ availabilityZone: zoneC, memoryMb: 512 });
      const cause = await refused({ instanceUuid });
      expect(cause).toMatchObject({ type: 'NoValidHost' });
      expect(cause!.message).toBe(
        `No valid host was found for flavor m1.tiny in availability zone ${zoneC}: ${c.host}: 0 MiB free memory, 512 MiB needed`,
      );
      expect(await getInstance(stack.pool, instanceUuid)).toMatchObject({
        vmState: 'shelved_offloaded',
        taskState: null,
      });
    } finally {
      await c.stop();
    }
  });
});
