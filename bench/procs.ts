// What the processes of the stack use, read from /proc: a worker's resident memory, and the CPU
// time each component (workers, Temporal, Glance, PostgreSQL, libvirtd) spends during a phase.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);
const clockTicks = Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;

/** The process's resident memory (VmRSS) in MiB; 0 once it is gone. */
async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) / 1024;
}

interface ProcessInfo {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string;
  /** CPU time of the process and of its children that ended, in clock ticks. */
  cpuTicks: number;
}

async function processes(): Promise<ProcessInfo[]> {
  const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  const found = await Promise.all(
    pids.map(async (pid) => {
      try {
        const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
        // The command name is in parentheses and may itself hold spaces or parentheses.
        const close = stat.lastIndexOf(')');
        const fields = stat.slice(close + 2).split(' ');
        const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ');
        return {
          pid: Number(pid),
          ppid: Number(fields[1]),
          comm: stat.slice(stat.indexOf('(') + 1, close),
          cmdline,
          cpuTicks: fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0),
        };
      } catch {
        return null; // gone meanwhile
      }
    }),
  );
  return found.filter((info) => info !== null);
}

/** The process and all its descendants. */
function tree(all: readonly ProcessInfo[], root: number): ProcessInfo[] {
  const members = new Set([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const info of all) {
      if (!members.has(info.pid) && members.has(info.ppid)) {
        members.add(info.pid);
        grew = true;
      }
    }
  }
  return all.filter((info) => members.has(info.pid));
}

/** The process and its descendants, from the kernel's list of each thread's children. */
async function descendants(pid: number): Promise<number[]> {
  const threads = await readdir(`/proc/${pid}/task`).catch(() => []);
  const lists = await Promise.all(
    threads.map((tid) => readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '')),
  );
  const children = lists.flatMap((list) => list.split(' ').filter(Boolean).map(Number));
  return [pid, ...(await Promise.all(children.map(descendants))).flat()];
}

/**
 * Resident memory of a process, sampled every 50 ms: at the start, and its peak alone and with
 * its children (qemu-img runs).
 */
export function memorySampler(pid: number): { stop(): Promise<{ before: number; rss: number; treeRss: number }> } {
  let before: number | undefined;
  let rss = 0;
  let treeRss = 0;
  let stopped = false;
  const sampling = (async () => {
    while (!stopped) {
      const now = await rssOf(pid);
      before ??= now;
      rss = Math.max(rss, now);
      const sizes = await Promise.all((await descendants(pid)).map(rssOf));
      treeRss = Math.max(
        treeRss,
        sizes.reduce((sum, size) => sum + size, 0),
      );
      await sleep(50);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await sampling;
      return { before: before ?? 0, rss, treeRss };
    },
  };
}

/** The components whose CPU use a phase reports, each found among the host's processes. */
export type Components = Record<string, (info: ProcessInfo, all: readonly ProcessInfo[]) => boolean>;

/**
 * The bench's own worker processes (and their children; a component may be several workers), plus
 * the stack's services by name. Temporal is the dev server, or the cluster profile's server
 * processes and the HAProxy in front of them.
 */
export function stackComponents(workers: Record<string, number | readonly number[]>): Components {
  const components: Components = {};
  for (const [name, pids] of Object.entries(workers)) {
    const roots = typeof pids === 'number' ? [pids] : pids;
    components[name] = (info, all) => roots.some((pid) => tree(all, pid).some((member) => member.pid === info.pid));
  }
  return {
    ...components,
    'bench (client)': (info) => info.pid === process.pid,
    temporal: (info) =>
      info.comm === 'temporal' ||
      info.comm === 'temporal-server' ||
      (info.comm === 'haproxy' && info.cmdline.includes('temporal-cluster')),
    'glance-api': (info) => info.cmdline.includes('glance-api'),
    postgres: (info) => info.comm === 'postgres' || info.comm.startsWith('postgres:'),
    libvirtd: (info) => info.comm === 'libvirtd',
    qemu: (info) => info.comm.startsWith('qemu-system') || info.comm.startsWith('qemu-kvm'),
  };
}

export interface CpuUse {
  /** Per component, in % of one core (200% is both cores of a 2-core machine busy). */
  byComponent: Record<string, number>;
  /** The whole machine, in % of one core. */
  machine: number;
}

async function machineTicks(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
  const [user, nice, system, , , irq, softirq, steal] = line.split(/\s+/).slice(1).map(Number);
  return user! + nice! + system! + irq! + softirq! + steal!;
}

async function ticksByComponent(components: Components): Promise<Record<string, number>> {
  const all = await processes();
  return Object.fromEntries(
    Object.entries(components).map(([name, matches]) => [
      name,
      all.filter((info) => matches(info, all)).reduce((sum, info) => sum + info.cpuTicks, 0),
    ]),
  );
}

/** Starts measuring; `stop` gives the CPU each component used since, as a share of the wall time. */
export async function cpuMeter(components: Components): Promise<{ stop(): Promise<CpuUse> }> {
  const started = performance.now();
  const before = await ticksByComponent(components);
  const machineBefore = await machineTicks();
  return {
    async stop() {
      const after = await ticksByComponent(components);
      const seconds = (performance.now() - started) / 1000;
      const percent = (ticks: number) => (ticks / clockTicks / seconds) * 100;
      return {
        byComponent: Object.fromEntries(
          Object.keys(components).map((name) => [name, percent(Math.max(0, after[name]! - before[name]!))]),
        ),
        machine: percent((await machineTicks()) - machineBefore),
      };
    },
  };
}
