// What every part of the bench is given by bench/main.ts.
import type { Bench } from './vm-shelve.js';
import type { WorkerProcess } from './workers.js';

export interface ComputeHost {
  host: string;
  instancesPath: string;
  /** The compute worker's process. */
  pid: number;
}

export interface RunContext {
  bench: Bench;
  /** Runs per figure. */
  runs: number;
  /** Scratch space for disks and references; removed at the end. */
  workDir: string;
  /** The host with real QEMU/KVM domains. */
  kvm: ComputeHost;
  /** The host on libvirt's test driver, for many instances at once. */
  test: ComputeHost;
  conductorPid: number;
  /** The bench's own API process, started like `npm run api`. */
  api: { url: string; pid: number };
  /** A 4 MiB boot image, for instances whose disk does not matter. */
  tinyImageId: string;
  print(line: string): void;
  /** Starts one more worker of the bench's own; it is stopped when the bench ends, if not before. */
  startWorker(name: string, program: 'conductor' | 'compute', env: NodeJS.ProcessEnv): Promise<WorkerProcess>;
  /** Runs `task` when the bench ends, whichever way, after its workers stopped and its leftovers went. */
  atFinish(task: () => Promise<void>): void;
}
