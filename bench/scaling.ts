// Section 4: N instances on the test-driver host (tiny disks, domains that cost nothing) shelved
// all at once, then unshelved all at once; throughput, latency, failures, and the CPU each
// component of the stack used meanwhile, to see which one saturates first.
import { availableParallelism } from 'node:os';
import { VmState } from '../lib/nova.js';
import type { RunContext } from './context.js';
import { type Phase, phase, saturation } from './phase.js';
import { stackComponents } from './procs.js';
import { type Figure, quantile, summary } from './stats.js';
import { benchFlavor, buildInstance, shelve, unshelve } from './vm-shelve.js';

export async function benchScaling(
  ctx: RunContext,
  levels: readonly number[],
): Promise<{ figures: Figure[]; notes: string[] }> {
  const { bench, test, print } = ctx;
  const components = stackComponents({
    'conductor worker': ctx.conductorPid,
    'compute worker (test driver)': test.pid,
    'compute worker (kvm)': ctx.kvm.pid,
  });
  const cores = availableParallelism();
  const flavor = benchFlavor('scaling', 1, 32);
  const figures: Figure[] = [];
  const notes: string[] = [];
  for (const n of levels) {
    const measured: Record<'shelve' | 'unshelve', Phase[]> = { shelve: [], unshelve: [] };
    const failedCycles: number[] = [];
    for (let run = 1; run <= ctx.runs; run++) {
      const builds = await Promise.allSettled(
        Array.from({ length: n }, () =>
          buildInstance(bench, { host: test.host, imageRef: ctx.tinyImageId, flavor, name: `scaling${n}` }),
        ),
      );
      const built = builds.flatMap((result) => (result.status === 'fulfilled' ? [result.value.instance.uuid] : []));
      const shelved = await phase(components, built, (uuid) => shelve(bench, uuid), VmState.SHELVED_OFFLOADED);
      const unshelved = await phase(
        components,
        shelved.done,
        (uuid) => unshelve(bench, uuid, test.host),
        VmState.ACTIVE,
      );
      measured.shelve.push(shelved);
      measured.unshelve.push(unshelved);
      failedCycles.push(n - unshelved.done.length);
      for (const uuid of built) await bench.leftovers.removeInstance(uuid);
      print(
        `scaling N=${n} run ${run}/${ctx.runs}: shelve ${shelved.throughput.toFixed(1)}/s, ` +
          `unshelve ${unshelved.throughput.toFixed(1)}/s, failed cycles ${n - unshelved.done.length}` +
          (builds.length > built.length ? ` (${builds.length - built.length} builds failed)` : ''),
      );
    }
    for (const action of ['shelve', 'unshelve'] as const) {
      const phases = measured[action];
      figures.push(
        {
          section: 'scaling',
          name: `N=${n} ${action}: throughput`,
          unit: 'actions/s',
          samples: phases.map((p) => p.throughput),
        },
        {
          section: 'scaling',
          name: `N=${n} ${action}: p50 latency`,
          unit: 's',
          samples: phases.map((p) => quantile(p.latencies, 0.5)),
        },
        {
          section: 'scaling',
          name: `N=${n} ${action}: p95 latency`,
          unit: 's',
          samples: phases.map((p) => quantile(p.latencies, 0.95)),
        },
      );
      const cpu = Object.fromEntries(
        Object.keys(components).map((name) => [name, summary(phases.map((p) => p.cpu.byComponent[name]!)).median]),
      );
      const machine = summary(phases.map((p) => p.cpu.machine)).median;
      notes.push(`N=${n} ${action} (median CPU over the runs): ${saturation(cpu, machine, cores)}`);
    }
    figures.push({
      section: 'scaling',
      name: `N=${n}: failed cycles (build, shelve or unshelve)`,
      unit: 'count',
      samples: failedCycles,
      target: { bound: 'at most', value: 0 },
      digits: 0,
    });
  }
  return { figures, notes };
}
