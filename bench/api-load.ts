// Section 5: the API's read load. GET /v2.1/servers/{id} at a fixed rate (autocannon), first with
// nothing else going on, then while 20 instances on the test-driver host are shelved and
// unshelved over and over, so that 20 actions are always in flight. Reports latency, errors, and
// the CPU each component used meanwhile.
import autocannon from 'autocannon';
import { VmState } from '../lib/nova.js';
import type { RunContext } from './context.js';
import { cpuMeter, stackComponents } from './procs.js';
import type { Figure } from './stats.js';
import { benchFlavor, buildInstance, BENCH_OWNER, shelve, unshelve } from './vm-shelve.js';

export interface LoadPlan {
  /** Requests per second, over all connections. */
  rate: number;
  idleSeconds: number;
  loadedSeconds: number;
  instances: number;
}

interface Load {
  p50: number;
  p99: number;
  served: number;
  /** Connection errors, timeouts and answers other than 2xx. */
  errors: number;
}

async function readLoad(apiUrl: string, serverIds: readonly string[], rate: number, seconds: number): Promise<Load> {
  let next = 0;
  const result = await autocannon({
    url: apiUrl,
    connections: 10,
    overallRate: rate,
    duration: seconds,
    headers: { 'x-auth-token': `${BENCH_OWNER.userId}:${BENCH_OWNER.projectId}` },
    requests: [
      {
        method: 'GET',
        // Round the instances, so that every read meets one in the middle of an action.
        setupRequest: (request) => ({ ...request, path: `/v2.1/servers/${serverIds[next++ % serverIds.length]}` }),
      },
    ],
  });
  return {
    p50: result.latency.p50,
    p99: result.latency.p99,
    served: result.requests.total / seconds,
    errors: result.errors + result.timeouts + result.non2xx,
  };
}

/** Shelves and unshelves each instance until `stop` resolves; counts cycles and failed actions. */
function churn(ctx: RunContext, uuids: readonly string[], stop: Promise<void>) {
  let stopped = false;
  void stop.then(() => (stopped = true));
  let cycles = 0;
  let failures = 0;
  const loops = uuids.map(async (uuid) => {
    while (!stopped) {
      const shelved = await shelve(ctx.bench, uuid).catch(() => null);
      if (shelved?.instance.vmState !== VmState.SHELVED_OFFLOADED) return void failures++;
      const unshelved = await unshelve(ctx.bench, uuid, ctx.test.host).catch(() => null);
      if (unshelved?.instance.vmState !== VmState.ACTIVE) return void failures++;
      cycles++;
    }
  });
  return Promise.all(loops).then(() => ({ cycles, failures }));
}

export async function benchApiLoad(ctx: RunContext, plan: LoadPlan): Promise<{ figures: Figure[]; notes: string[] }> {
  const { bench, test, api, print } = ctx;
  const flavor = benchFlavor('load', 1, 32);
  const uuids: string[] = [];
  for (let i = 0; i < plan.instances; i++) {
    const { instance } = await buildInstance(bench, {
      host: test.host,
      imageRef: ctx.tinyImageId,
      flavor,
      name: 'load',
    });
    uuids.push(instance.uuid);
  }
  try {
    const idle = await readLoad(api.url, uuids, plan.rate, plan.idleSeconds);
    print(`API load, idle: p50 ${idle.p50} ms, p99 ${idle.p99} ms, ${idle.errors} errors`);

    const meter = await cpuMeter(
      stackComponents({
        API: api.pid,
        'conductor worker': ctx.conductorPid,
        'compute worker (test driver)': test.pid,
      }),
    );
    let endLoad!: () => void;
    const churning = churn(ctx, uuids, new Promise<void>((resolve) => (endLoad = resolve)));
    const loaded = await readLoad(api.url, uuids, plan.rate, plan.loadedSeconds).finally(() => endLoad());
    const { cycles, failures } = await churning;
    const cpu = await meter.stop();
    print(
      `API load, ${plan.instances} instances shelving and unshelving: p50 ${loaded.p50} ms, p99 ${loaded.p99} ms, ` +
        `${loaded.errors} errors; ${cycles} cycles, ${failures} failed actions`,
    );

    const figure = (name: string, unit: string, value: number, zero = false): Figure => ({
      section: 'load',
      name,
      unit,
      samples: [value],
      digits: unit === 'ms' ? 1 : 0,
      ...(zero ? { target: { bound: 'at most', value: 0 } as const } : {}),
    });
    const busiest = Object.entries(cpu.byComponent)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 4)
      .map(([name, percent]) => `${name} ${percent.toFixed(0)}%`)
      .join(', ');
    return {
      figures: [
        figure('idle: p50 latency', 'ms', idle.p50),
        figure('idle: p99 latency', 'ms', idle.p99),
        figure('idle: errors (connection, timeout, not 2xx)', 'count', idle.errors, true),
        figure(`${plan.instances} actions in flight: p50 latency`, 'ms', loaded.p50),
        figure(`${plan.instances} actions in flight: p99 latency`, 'ms', loaded.p99),
        figure(`${plan.instances} actions in flight: requests served`, 'requests/s', loaded.served),
        figure(
          `${plan.instances} actions in flight: errors (connection, timeout, not 2xx)`,
          'count',
          loaded.errors,
          true,
        ),
        figure('shelve-unshelve cycles completed meanwhile', 'count', cycles),
        figure('failed actions meanwhile', 'count', failures, true),
      ],
      notes: [
        `GET /v2.1/servers/{id} at ${plan.rate} requests/s over 10 connections, round the ${plan.instances} instances: ${plan.idleSeconds} s idle, then ${plan.loadedSeconds} s while each instance is shelved and unshelved in a loop.`,
        `CPU during the loaded phase: ${busiest}; machine ${cpu.machine.toFixed(0)}%.`,
      ],
    };
  } finally {
    for (const uuid of uuids) await bench.leftovers.removeInstance(uuid);
  }
}
