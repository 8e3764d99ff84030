// A separate hypervisor (scripts/hypervisor) as a test sees it: network and mount namespaces,
// libvirtd and instances folder of its own, and its compute worker running inside them.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { connectGuest, type GuestProtocol } from '../../lib/guest-protocol.js';
import { startWorkerProcess, type WorkerProcess } from './worker-process.js';

const run = promisify(execFile);
const repoDir = path.resolve(import.meta.dirname, '../..');
const script = path.join(repoDir, 'scripts/hypervisor');

export interface Hypervisor {
  name: string;
  /** Its end of the veth pair, which this machine reaches. */
  address: string;
  /** Its compute worker's settings, as scripts/hypervisor wrote them. */
  workerEnv: Record<string, string>;
  /** Runs a command inside it; resolves with its output. */
  exec(command: string[]): Promise<string>;
  /** A compute worker inside it, with its settings and `env` over them. */
  startComputeWorker(env?: NodeJS.ProcessEnv): Promise<WorkerProcess>;
  /**
   * The guest at `ip`, which only its hypervisor reaches: its protocol port is relayed to the
   * hypervisor's own address, where this machine connects (the relay waits for the guest to boot).
   */
  guest(ip: string): Promise<GuestProtocol>;
  /** Stops what runs inside it and removes it. */
  down(): Promise<void>;
}

/** Makes hypervisor `name` (scripts/hypervisor up); `index` picks its addresses, 10.251.<index>.0/30. */
export async function hypervisorUp(name: string, index: number): Promise<Hypervisor> {
  const stackDir = process.env.STACK_DIR ?? path.join(repoDir, '.stack');
  // One a crashed run left goes first; one that failed to come up goes at once.
  await run('bash', [script, 'down', name]);
  await run('bash', [script, 'up', name, String(index)]).catch(async (error: unknown) => {
    await run('bash', [script, 'down', name]);
    throw error;
  });
  const workerEnv = Object.fromEntries(
    (await readFile(path.join(stackDir, 'hypervisors', name, 'worker.env'), 'utf8'))
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  const address = `10.251.${index}.2`;
  const inside = ['bash', script, 'exec', name];
  const relays: ChildProcess[] = [];
  return {
    name,
    address,
    workerEnv,
    async exec(command) {
      return (await run(inside[0]!, [...inside.slice(1), ...command])).stdout;
    },
    startComputeWorker(env = {}) {
      return startWorkerProcess('compute', { ...workerEnv, ...env }, inside);
    },
    async guest(ip) {
      // One relay at a time on the hypervisor's protocol port.
      for (const relay of relays.splice(0)) relay.kill();
      const relay = spawn(
        inside[0]!,
        [...inside.slice(1), process.execPath, '--import', 'tsx', 'test/support/guest-relay.ts', address, ip],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      relays.push(relay);
      await Promise.race([
        once(relay.stdout!, 'data'),
        once(relay, 'exit').then(([code]) => Promise.reject(new Error(`the guest relay exited (${code})`))),
      ]);
      // A boot under TCG takes seconds, and the relay answers only once the guest does.
      return connectGuest(address, 10_000, 120_000);
    },
    async down() {
      for (const relay of relays.splice(0)) relay.kill();
      await run('bash', [script, 'down', name]);
    },
  };
}
