// The README's first command, `npm run demo`, as an end-to-end test: scripts/demo.ts runs against
// this stack's workers and a second compute host. It builds a server of the test guest (docs/guest.md),
// has the guest write a file, shelves it (the guest powers itself off), offloads it and unshelves
// it on the second host, where the guest answers at the same address and reads its file back.
// Every check the demo prints must pass; the test then looks from outside at what it left.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { DomainState } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAction } from '../../lib/actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { readyLine } from '../../lib/guest-protocol.js';
import { consoleLogPath } from '../../lib/host-paths.js';
import { startTestStack, type TestComputeHost, type TestStack } from '../support/stack.js';

const repoDir = path.resolve(import.meta.dirname, '../..');

/** Runs scripts/demo.ts as scripts/demo does, once its workers run; resolves with its exit code and output. */
async function runDemo(env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const demo = spawn(process.execPath, ['--import', 'tsx', path.join(repoDir, 'scripts/demo.ts')], {
    cwd: repoDir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  demo.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  demo.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const [code] = (await once(demo, 'exit')) as [number | null];
  return { code, output };
}

describe('npm run demo', () => {
  let stack: TestStack;
  let second: TestComputeHost;
  let serverUuid: string | undefined;
  let bootImageId: string | undefined;

  beforeAll(async () => {
    stack = await startTestStack();
    second = await stack.addComputeHost(`${stack.config.compute.host}-demo`);
  });

  afterAll(async () => {
    if (serverUuid)
      await (await startAction(stack.client, stack.config, 'delete', { instanceUuid: serverUuid })).result();
    // The demo deleted the boot image from Glance; its copy in the first host's image cache stays.
    if (bootImageId) await rm(path.join(stack.config.compute.instancesPath, '_base', bootImageId), { force: true });
    await stack?.stop();
  });

  it('takes the test guest through build, shelve, offload and unshelve on a second host, its file intact', async () => {
    const { code, output } = await runDemo({
      DEMO_SECOND_HOST: second.config.compute.host,
      DEMO_SECOND_INSTANCES_PATH: second.config.compute.instancesPath,
    });
    console.log(output);
    serverUuid = /server (\S+) stays running on host/.exec(output)?.[1];
    bootImageId = /to Glance as image (\S+)/.exec(output)?.[1];
    expect(output).not.toMatch(/\bFAIL\b/);
    expect(code).toBe(0);
    expect(output).toMatch(/ok {3}the guest answers at 10\.\d+\.\d+\.\d+, /);
    expect(output).toMatch(/ok {3}the guest powered itself off: its console log ends with 'vm-shelve-guest power-off'/);
    expect(output).toMatch(/ok {3}libvirt says 'shut off \(shutdown\)'/);
    expect(output).toMatch(/ok {3}domain gone from libvirt/);
    expect(output).toMatch(/ok {3}the guest answers at \S+ again/);
    expect(output).toMatch(/ok {3}the guest read \/data\/demo\.bin back, byte for byte/);
    expect(output).toMatch(/demo passed/);

    // What the demo left: its server running on the second host, whose guest booted there.
    const instance = await getInstance(stack.pool, serverUuid!);
    expect(instance).toMatchObject({ vmState: 'active', taskState: null, host: second.config.compute.host });
    const domain = await stack.libvirt.lookupInstance(serverUuid!);
    expect((await domain!.getInfo()).state).toBe(DomainState.RUNNING);
    const consoleLog = await readFile(consoleLogPath(second.config.compute.instancesPath, serverUuid!), 'utf8');
    expect(consoleLog.split(/\r?\n/).filter((line) => readyLine.test(line))).toEqual([
      `vm-shelve-guest ready ${instance.ports[0]!.fixedIp!.address}`,
    ]);
  }, 300_000);
});
