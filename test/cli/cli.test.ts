// The vm-shelve command line, run as a user would (bin/vm-shelve), against the API and the real
// stack, with a stub compute host whose upload reports progress slowly enough to be seen.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/vm-shelve');
const MiB = 1024 * 1024;

describe('the vm-shelve command line', () => {
  let stack: TestStack;
  let stub: StubHost;
  let api: FastifyInstance;
  let endpoint: string;
  /** Instances whose snapshot fails, as a full host disk would make it. */
  const failingSnapshots = new Set<string>();

  beforeAll(async () => {
    stack = await startTestStack({ SHELVED_OFFLOAD_TIME: '-1' });
    stub = await startStubHost(stack, {
      async snapshotInstance({ instance, imageId }) {
        if (failingSnapshots.has(instance.uuid)) {
          throw ApplicationFailure.create({
            type: 'HostDiskFull',
            message: `No space left on the host for the snapshot of ${instance.uuid}`,
            nonRetryable: true,
          });
        }
        // 3 s of upload, reported as the real one does: bytes done of total in the heartbeat.
        for (let done = 0; done <= 300 * MiB; done += 30 * MiB) {
          Context.current().heartbeat({ step: 'upload', bytesDone: done, bytesTotal: 300 * MiB });
          await sleep(300);
        }
        return stub.snapshot(imageId);
      },
    });
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    endpoint = await api.listen({ host: '127.0.0.1', port: 0 });
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
  });

  async function vmShelve(token: string, ...args: string[]) {
    // The CLI needs the API alone: a Temporal it could reach would only hide a dependency.
    const env = { ...process.env, VM_SHELVE_API: endpoint, OS_TOKEN: token, TEMPORAL_ADDRESS: '127.0.0.1:1' };
    return promisify(execFile)(cli, args, { env }).then(
      ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
      (error: { code: number; stdout: string; stderr: string }) => error,
    );
  }
  const owner = `${testOwner.userId}:${testOwner.projectId}`;

  it('shelves, printing the states as they change and the upload progress', async () => {
    const { uuid } = await stub.buildInstance();
    const { code, stdout, stderr } = await vmShelve(owner, 'shelve', uuid);
    expect(code).toBe(0);
    expect(stdout).toContain('task_state=shelving_image_uploading');
    expect(stdout.trim().split('\n').at(-1)).toBe(`shelve of ${uuid} done: SHELVED`);
    // A bar that moves: some share of the 300 MiB done, at a rate.
    expect(stderr).toMatch(/upload \[=+-*\] [1-9]\d*% [1-9][\d.]*\/300\.0 MiB [1-9][\d.]* MiB\/s/);
  });

  it("reads the action's progress from the API, and null once it has finished", async () => {
    const { uuid } = await stub.buildInstance();
    const api = (path: string) =>
      fetch(`${endpoint}/v2.1${path}`, { headers: { 'x-auth-token': owner } }).then(
        async (response) => (await response.json()) as Record<string, unknown>,
      );
    const accepted = await fetch(`${endpoint}/v2.1/servers/${uuid}/action`, {
      method: 'POST',
      headers: { 'x-auth-token': owner, 'content-type': 'application/json' },
      body: JSON.stringify({ shelve: null }),
    });
    expect(accepted.status).toBe(202);
    const requestId = accepted.headers.get('x-openstack-request-id')!;
    const seen: unknown[] = [];
    for (;;) {
      const { instanceAction } = await api(`/servers/${uuid}/os-instance-actions/${requestId}`);
      const { progress } = instanceAction as { progress: { bytes_done: number | null } | null };
      seen.push(progress);
      if (progress === null) break;
      await sleep(200);
    }
    // While the upload ran: its step and bytes, and nothing else of the heartbeat.
    expect(seen).toContainEqual({
      step: 'upload',
      bytes_done: expect.any(Number),
      bytes_total: 300 * MiB,
      running: true,
    });
    // SHELVED, or offloaded too if a conductor of another test run (SHELVED_OFFLOAD_TIME 0) ran it.
    expect((await api(`/servers/${uuid}`)).server).toMatchObject({ status: expect.stringMatching(/^SHELVED/) });
  });

  it("reports a failed action's reason from the actions log", async () => {
    const { uuid } = await stub.buildInstance();
    failingSnapshots.add(uuid);
    const { code, stdout, stderr } = await vmShelve(owner, 'shelve', uuid);
    expect(code).toBe(1);
    expect(stdout).toContain('task_state=shelving');
    expect(stderr).toBe(`vm-shelve: shelve of ${uuid} failed: No space left on the host for the snapshot of ${uuid}\n`);
    const shown = JSON.parse((await vmShelve(owner, '--json', 'show', uuid)).stdout) as Record<string, unknown>;
    expect(shown).toMatchObject({ status: 'ACTIVE', 'OS-EXT-STS:task_state': null });
  });

  it('answers --json for scripts', async () => {
    const { uuid } = await stub.buildInstance();
    const shown = await vmShelve(owner, '--json', 'show', uuid);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id: uuid, status: 'ACTIVE' });
    const listed = JSON.parse((await vmShelve(owner, '--json', 'list')).stdout) as { id: string }[];
    expect(listed.map((server) => server.id)).toContain(uuid);
  });

  it("resets a server's state, as an admin only", async () => {
    const { uuid } = await stub.buildInstance();
    const refused = await vmShelve(owner, 'reset-state', '--error', uuid);
    expect(refused.stderr).toBe(
      "vm-shelve: 403: Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed.\n",
    );
    const reset = await vmShelve('admin:admin-project', 'reset-state', '--error', uuid);
    expect(reset.code).toBe(0);
    expect(reset.stdout).toMatch(new RegExp(`^state of ${uuid} reset: ERROR +vm_state=error task_state=None`));
  });

  it('fails with a non-zero exit and a one-line reason', async () => {
    const { uuid } = await stub.buildInstance();
    const forbidden = await vmShelve(owner, 'offload', uuid);
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toBe(
      "vm-shelve: 403: Policy doesn't allow os_compute_api:os-shelve:shelve_offload to be performed.\n",
    );
    const conflict = await vmShelve(owner, 'unshelve', uuid);
    expect(conflict.stderr).toBe(`vm-shelve: 409: Cannot 'unshelve' instance ${uuid} while it is in vm_state active\n`);
    const noToken = await vmShelve('', 'show', uuid);
    expect(noToken.code).toBe(1);
  });

  it('lists the actions with their steps', async () => {
    const { uuid } = await stub.buildInstance();
    const { stdout } = await vmShelve(owner, 'actions', uuid);
    expect(stdout).toMatch(/create\n {4}schedule_instances: Success\n {4}compute_build_and_run_instance: Success/);
  });
});
