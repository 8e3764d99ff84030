// The bench's own workers, as processes of their own like the demo's: a conductor on a task queue
// no test uses, and compute workers under host names no test uses. Run through node's tsx loader
// (not the tsx command, which would put a wrapper process in between) so that each pid is the
// worker itself, whose memory and CPU the bench reads from /proc.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';

export interface WorkerProcess {
  name: string;
  pid: number;
  stop(): Promise<void>;
  /** At once, without waiting: for when the bench itself exits. */
  kill(): void;
}

/**
 * Starts `workers/<script>.ts` with `env` added to this process's environment; resolves once its
 * log says it started. Its output goes to `logFile`.
 */
export async function startWorker(
  repoDir: string,
  name: string,
  script: 'conductor' | 'compute',
  env: NodeJS.ProcessEnv,
  logFile: string,
): Promise<WorkerProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(repoDir, 'workers', `${script}.ts`)],
    {
      cwd: repoDir,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stderr!.pipe(log);
  const exited = once(child, 'exit');
  await new Promise<void>((resolve, reject) => {
    let pending = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      log.write(chunk);
      pending += chunk.toString();
      if (pending.includes(`"msg":"${script} worker started"`)) resolve();
      pending = pending.slice(pending.lastIndexOf('\n') + 1);
    });
    exited.then(
      ([code]) => reject(new Error(`the ${name} worker exited with ${code} before it started; see ${logFile}`)),
      reject,
    );
  });
  return {
    name,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        // A worker finishes its running activities first; one that hangs is not waited for forever.
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        await exited.catch(() => undefined);
        clearTimeout(timer);
      }
      log.end();
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
