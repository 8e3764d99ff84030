// One phase of the scaling and scale parts: an action on many instances, with its throughput,
// latencies, failures, and the CPU each component of the stack used meanwhile, to see which one
// saturates first.
import { type Components, type CpuUse, cpuMeter } from './procs.js';
import type { Timed } from './vm-shelve.js';

export interface Phase {
  throughput: number;
  latencies: number[];
  failures: number;
  cpu: CpuUse;
  seconds: number;
}

/** Runs `action` on every item, at most `limit` at once; settles each as Promise.allSettled does. */
export async function settleAll<T, R>(
  items: readonly T[],
  limit: number,
  action: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < items.length; i = next++) {
      results[i] = await action(items[i]!).then(
        (value) => ({ status: 'fulfilled', value }) as const,
        (reason: unknown) => ({ status: 'rejected', reason }) as const,
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

/**
 * Runs `action` on every instance, at most `inFlight` at once (all at once by default); the
 * phase lasts until the last one ends. An action counts when its instance reached `expected`.
 */
export async function phase(
  components: Components,
  uuids: readonly string[],
  action: (uuid: string) => Promise<Timed>,
  expected: string,
  inFlight = uuids.length,
): Promise<Phase & { done: string[] }> {
  const meter = await cpuMeter(components);
  const started = performance.now();
  const results = await settleAll(uuids, inFlight, action);
  const seconds = (performance.now() - started) / 1000;
  const cpu = await meter.stop();
  const succeeded = results.flatMap((result) =>
    result.status === 'fulfilled' && result.value.instance.vmState === expected ? [result.value] : [],
  );
  return {
    throughput: succeeded.length / seconds,
    latencies: succeeded.map((timed) => timed.seconds),
    failures: uuids.length - succeeded.length,
    cpu,
    seconds,
    done: succeeded.map((timed) => timed.instance.uuid),
  };
}

/**
 * The component working hardest, and whether it (or the machine) ran out of CPU: a component
 * near a whole core (JavaScript and Glance's eventlet worker run on one), or all cores near full.
 * Components of several processes (`spread`: Temporal's cluster, many compute workers) may use
 * more than a core without saturating, so only the machine's cores bound them.
 */
export function saturation(
  cpu: Record<string, number>,
  machine: number,
  cores: number,
  spread: readonly string[] = [],
): string {
  const ranked = Object.entries(cpu).sort((a, b) => b[1] - a[1]);
  const shares = ranked
    .slice(0, 4)
    .map(([name, value]) => `${name} ${value.toFixed(0)}%`)
    .join(', ');
  const [top, percent] = ranked.find(([name]) => !spread.includes(name)) ?? ['', 0];
  const verdict =
    percent >= 90
      ? `${top} saturates (one core is 100%)`
      : machine >= 85 * cores
        ? `the machine's ${cores} cores saturate before any one component`
        : 'no component is CPU-bound';
  return `${verdict}; CPU ${shares}; machine ${machine.toFixed(0)}% of ${cores * 100}%`;
}
