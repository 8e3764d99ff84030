// A worker in a process of its own, as in production, so that a test can kill it with SIGKILL
// (no shutdown, no goodbye to Temporal) and start it again.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testLogFile } from './logs.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// A worker a failed test never stopped would go on polling its task queue, and take steps of
// later tests' workflows: none outlives the test process that started it.
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface WorkerProcess {
  readonly pid: number;
  /** SIGKILL: the worker dies mid-step, as on a host crash. */
  kill(): Promise<void>;
  /** SIGTERM and wait for it to end. */
  stop(): Promise<void>;
}

/** Starts workers/<kind>.ts with `env` over this process's environment; resolves once it polls. */
export async function startWorkerProcess(
  kind: 'compute' | 'conductor',
  env: NodeJS.ProcessEnv = {},
  /**
   * A command that runs the worker in a place of its own and execs it (scripts/hypervisor exec
   * NAME): the signals still reach the worker.
   */
  prefix: string[] = [],
): Promise<WorkerProcess> {
  // node itself with tsx's loader, not the tsx launcher: one process, so SIGKILL reaches the worker.
  const [command, ...args] = [
    ...prefix,
    process.execPath,
    '--import',
    'tsx',
    path.join(repoDir, 'workers', `${kind}.ts`),
  ];
  const child: ChildProcess = spawn(command!, args, {
    cwd: repoDir,
    // No reconciler schedule from a test's conductor: tests run their own reconciles, on their own instances.
    env: { ...process.env, RECONCILE_INTERVAL: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let output = '';
  // Kept for scripts/scan-logs, which looks for secrets in it after the tests.
  const log = createWriteStream(testLogFile(`${kind}-worker.log`), { flags: 'a' });
  // 'close', not 'exit': the output's last chunks may come after the process ended.
  child.once('close', () => log.end());
  const started = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      log.write(chunk);
      output += chunk.toString();
      if (output.includes(`"msg":"${kind} worker started"`)) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${kind} worker exited (${code}) before it started:\n${output}`)));
  });
  await started;
  const ended = once(child, 'exit');
  return {
    pid: child.pid!,
    async kill() {
      child.kill('SIGKILL');
      await ended;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await ended;
    },
  };
}
