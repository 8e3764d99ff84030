// What every part of the bench is given by bench/main.ts.
import type { Bench } from './vm-shelve.js';

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
}
