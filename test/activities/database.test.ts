// The claim and the compare-and-swap saves (lib/db), on the real PostgreSQL, and the claim
// activity's rule that the workflow running it is the claimant.
import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { createDatabaseActivities } from '../../activities/database.js';
import { createInstance, type CreateInstanceRequest, getInstance } from '../../lib/db/instances.js';
import { type ClaimRequest, claimInstance, markInstanceDeleted, saveInstance } from '../../lib/db/task-states.js';
import { loadConfig } from '../../lib/config.js';
import { macAddress } from '../../lib/nova.js';
import { sqlErrorsClassified, sqlState } from '../../lib/sql-errors.js';
import { createPool } from '../../lib/postgres.js';

const config = loadConfig();
const pool = createPool(config.databaseUrl);
const database = createDatabaseActivities(pool);

/** This run's project: the file leaves its servers, and a project's network has 253 addresses. */
const testProject = `db-${randomUUID().slice(0, 8)}`;

async function activeInstance(ports: CreateInstanceRequest['ports'] = [], projectId = testProject): Promise<string> {
  const uuid = randomUUID();
  const requestId = `req-build-${uuid}`;
  await createInstance(pool, {
    uuid,
    displayName: 'db-test',
    projectId,
    userId: 'u',
    imageRef: randomUUID(),
    flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
    availabilityZone: null,
    requestId,
    systemMetadata: {},
    blockDeviceMappings: [],
    ports,
  });
  await saveInstance(pool, {
    instanceUuid: uuid,
    requestId,
    expectedTaskStates: ['spawning'],
    changes: { vmState: 'active', taskState: null, host: 'h', launched: true },
  });
  return uuid;
}

afterAll(() => pool.end());

describe('claimInstance', () => {
  it('lets exactly one of many concurrent actions claim the instance; the others fail naming the state', async () => {
    const uuid = await activeInstance();
    const claims = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        claimInstance(pool, { instanceUuid: uuid, action: 'shelve', requestId: `req-${i}` }),
      ),
    );
    expect(claims.filter((claim) => claim.status === 'fulfilled')).toHaveLength(1);
    const refusals = claims.filter((claim) => claim.status === 'rejected').map((claim) => claim.reason);
    expect(refusals).toHaveLength(9);
    for (const refusal of refusals) {
      expect(refusal).toBeInstanceOf(ApplicationFailure);
      expect(refusal).toMatchObject({ type: 'UnexpectedTaskState', nonRetryable: true });
      expect(refusal.message).toBe(`Cannot 'shelve' instance ${uuid} while it is in task_state shelving`);
    }
  });

  it('passes again for the request that holds the claim (a retried activity), and sets image_base_image_ref', async () => {
    const uuid = await activeInstance();
    const claim = { instanceUuid: uuid, action: 'shelve', requestId: 'req-a' } as const;
    await claimInstance(pool, claim);
    const again = await claimInstance(pool, claim);
    expect(again.taskState).toBe('shelving');
    expect(again.systemMetadata.image_base_image_ref).toBe(again.imageRef);
  });

  it('passes again only for the workflow the claim was made for, whatever the request id', async () => {
    const uuid = await activeInstance();
    const claim = { instanceUuid: uuid, action: 'shelve', requestId: 'req-api' } as const;
    // The API claims for the workflow it is about to start.
    await claimInstance(pool, { ...claim, workflowId: `shelve-${uuid}` });
    const inWorkflow = (workflowId: string, request: ClaimRequest = claim) =>
      new MockActivityEnvironment({ workflowExecution: { workflowId, runId: randomUUID() } }).run(
        database.claimInstance,
        request,
      );
    // Inside an activity the workflow that runs it is the claimant: a named workflowId is ignored.
    for (const attempt of [
      () => inWorkflow('intruder'),
      () => inWorkflow('intruder', { ...claim, workflowId: `shelve-${uuid}` }),
      () => claimInstance(pool, claim),
    ]) {
      await expect(attempt()).rejects.toMatchObject({
        type: 'UnexpectedTaskState',
        nonRetryable: true,
        message: `Cannot 'shelve' instance ${uuid} while it is in task_state shelving`,
      });
    }
    expect(await inWorkflow(`shelve-${uuid}`)).toMatchObject({ taskState: 'shelving' });
    expect(await inWorkflow(`shelve-${uuid}`)).toMatchObject({ taskState: 'shelving' });
  });

  it('refuses a vm_state the action does not start from, changing nothing', async () => {
    const uuid = await activeInstance();
    const before = await getInstance(pool, uuid);
    await expect(
      claimInstance(pool, {
        instanceUuid: uuid,
        action: 'shelveOffload',
        requestId: 'r',
      }),
    ).rejects.toMatchObject({
      type: 'InstanceInvalidState',
      message: `Cannot 'shelveOffload' instance ${uuid} while it is in vm_state active`,
    });
    expect(await getInstance(pool, uuid)).toEqual(before);
  });

  it('refuses an unknown or malformed instance id', async () => {
    const unknown = randomUUID();
    for (const id of [unknown, '../../etc/passwd']) {
      await expect(claimInstance(pool, { instanceUuid: id, action: 'shelve', requestId: 'r' })).rejects.toMatchObject({
        type: 'InstanceNotFound',
        message: `Instance ${id} could not be found.`,
      });
    }
  });
});

describe('saveInstance', () => {
  it('refuses a request that does not hold the instance', async () => {
    const uuid = await activeInstance();
    await claimInstance(pool, { instanceUuid: uuid, action: 'shelve', requestId: 'owner' });
    await expect(
      saveInstance(pool, {
        instanceUuid: uuid,
        requestId: 'stranger',
        expectedTaskStates: ['shelving'],
        changes: { vmState: 'shelved', taskState: null },
      }),
    ).rejects.toMatchObject({ type: 'UnexpectedTaskState', nonRetryable: true });
    expect((await getInstance(pool, uuid)).vmState).toBe('active');
  });
});

describe('createInstance', () => {
  const port = (mac: string) => ({ id: randomUUID(), network: 'private', macAddress: mac });

  it("draws another MAC address when a live port holds the port's, and frees a deleted server's", async () => {
    const mac = macAddress(randomUUID());
    const holder = await activeInstance([port(mac)]);
    const second = port(mac);
    const uuid = await activeInstance([second]);
    const [recorded] = (await getInstance(pool, uuid)).ports;
    expect(recorded).toMatchObject({ id: second.id });
    expect(recorded!.macAddress).not.toBe(mac);
    expect(recorded!.macAddress).toMatch(/^fa:16:3e(:[0-9a-f]{2}){3}$/);

    const requestId = `req-delete-${holder}`;
    await claimInstance(pool, { instanceUuid: holder, action: 'delete', requestId });
    await markInstanceDeleted(pool, { instanceUuid: holder, requestId });
    const third = await activeInstance([port(mac)]);
    expect((await getInstance(pool, third)).ports[0]!.macAddress).toBe(mac);
  });
});

describe('fixed IPs', () => {
  const port = () => ({ id: randomUUID(), network: 'private', macAddress: macAddress(randomUUID()) });
  const fixedIp = async (uuid: string) => (await getInstance(pool, uuid)).ports[0]!.fixedIp!;

  it("gives each port the lowest free address of its project's network, made on first use, never twice", async () => {
    const project = `ip-${randomUUID()}`;
    const subnetsDrawn = async () =>
      Number((await pool.query('SELECT last_value FROM network_subnets')).rows[0].last_value);
    const drawnBefore = await subnetsDrawn();
    // Ten first builds of a project at once: one network, ten addresses, and one subnet drawn.
    const uuids = await Promise.all(Array.from({ length: 10 }, () => activeInstance([port()], project)));
    const ips = await Promise.all(uuids.map(fixedIp));
    expect(new Set(ips.map((ip) => ip.networkId)).size).toBe(1);
    expect(await subnetsDrawn()).toBe(drawnBefore + 1);
    const { cidr, gateway } = ips[0]!;
    expect(cidr).toMatch(/^10\.(1[2-9][0-9]|2[0-5][0-9])\.\d+\.0\/24$/);
    const prefix = cidr.replace(/0\/24$/, '');
    expect(gateway).toBe(`${prefix}1`);
    expect(ips.map((ip) => ip.address).sort()).toEqual(
      Array.from({ length: 10 }, (_, i) => `${prefix}${i + 2}`).sort(),
    );

    // A deleted server's address is free again: the only one below the others' .12.
    const requestId = `req-delete-${uuids[0]}`;
    const freed = ips[0]!.address;
    await claimInstance(pool, { instanceUuid: uuids[0]!, action: 'delete', requestId });
    await markInstanceDeleted(pool, { instanceUuid: uuids[0]!, requestId });
    expect((await fixedIp(await activeInstance([port()], project))).address).toBe(freed);
  });

  it('gives two projects two different networks', async () => {
    const [a, b] = await Promise.all(
      [`ip-${randomUUID()}`, `ip-${randomUUID()}`].map((p) => activeInstance([port()], p)),
    );
    const [ipA, ipB] = await Promise.all([fixedIp(a!), fixedIp(b!)]);
    expect(ipA.networkId).not.toBe(ipB.networkId);
    expect(ipA.cidr).not.toBe(ipB.cidr);
  });
});

describe('PostgreSQL errors', () => {
  const run = sqlErrorsClassified({ query: (text: string) => pool.query(text) });

  it('fail at once when no retry can fix them, naming the SQLSTATE', async () => {
    for (const [text, state] of [
      ["SELECT 'not-a-uuid'::uuid", '22P02'],
      ['SELECT 1 / 0', '22012'],
      ['SELECT no_such_column FROM instances', '42703'],
    ]) {
      const error = await run.query(text!).catch((failure: unknown) => failure);
      expect(error).toBeInstanceOf(ApplicationFailure);
      expect(error).toMatchObject({ type: 'DatabaseRefused', nonRetryable: true });
      expect((error as Error).message).toContain(`SQLSTATE ${state}`);
    }
  });

  it('stay retryable when the next attempt may pass (a connection the server ended)', async () => {
    const error = await run.query('SELECT pg_terminate_backend(pg_backend_pid())').catch((failure: unknown) => failure);
    expect(error).not.toBeInstanceOf(ApplicationFailure);
    expect(sqlState(error)).toBe('57P01');
  });
});
