// The bench's own workers and API, as processes of their own like the demo's: a conductor on a task
// queue no test uses, compute workers under host names no test uses, and an API on a port of its
// own that starts its workflows on that queue. Run through node's tsx loader
// (not the tsx command, which would put a wrapper process in between) so that each pid is the
// worker itself, whose memory and CPU the bench reads from /proc.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';

/** Each program the bench runs: its file, and the log message that says it is ready. */
const PROGRAMS = {
  conductor: { file: 'workers/conductor.ts', ready: 'conductor worker started' },
  compute: { file: 'workers/compute.ts', ready: 'compute worker started' },
  api: { file: 'api/main.ts', ready: 'API listening' },
};

export interface WorkerProcess {
  name: string;
  pid: number;
  /** The JSON log line that said it was ready (the API's has its address). */
  ready: Record<string, unknown>;
  stop(): Promise<void>;
  /** At once, without waiting: for when the bench itself exits. */
  kill(): void;
}

/**
 * Starts `program` with `env` added to this process's environment; resolves once its log says it
 * is ready. Its output goes to `logFile`.
 */
export async function startWorker(
  repoDir: string,
  name: string,
  program: keyof typeof PROGRAMS,
  env: NodeJS.ProcessEnv,
  logFile: string,
): Promise<WorkerProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', path.join(repoDir, PROGRAMS[program].file)], {
    cwd: repoDir,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stderr!.pipe(log);
  const exited = once(child, 'exit');
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let pending = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      log.write(chunk);
      pending += chunk.toString();
      const line = pending.split('\n').find((candidate) => candidate.includes(`"msg":"${PROGRAMS[program].ready}"`));
      if (line) resolve(JSON.parse(line) as Record<string, unknown>);
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
    ready,
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

/**
 * A compute host on libvirt's test driver, with room for many instances and the storage pool a
 * compute worker needs: the environment its worker runs with. test:///default would do, but every
 * virsh run sees a fresh copy of it, so the pool the worker defines at start is gone at the next
 * virsh call; a node file defines it for all. Each worker process has its own domains.
 */
export async function testDriverHost(
  dir: string,
  host: string,
  { cores = 16, memoryMib = 8192 } = {},
): Promise<NodeJS.ProcessEnv> {
  const file = path.join(dir, `${host}-node.xml`);
  const volumes = path.join(dir, `${host}-volumes`);
  await mkdir(volumes, { recursive: true });
  await writeFile(
    file,
    `<node>
  <cpu><mhz>2000</mhz><nodes>1</nodes><sockets>1</sockets><cores>${cores}</cores><threads>1</threads><active>${cores}</active><model>x86_64</model></cpu>
  <memory>${memoryMib * 1024}</memory>
  <pool type='dir'><name>${host}-volumes</name><target><path>${volumes}</path></target></pool>
</node>
`,
  );
  return { COMPUTE_HOST: host, LIBVIRT_URI: `test://${file}`, VOLUME_POOL: `${host}-volumes`, VOLUMES_PATH: volumes };
}
