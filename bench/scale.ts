// Section 6: scale, on each Temporal the stack can run: the dev server, then the cluster profile
// with one and with two history processes. Compute hosts on libvirt's test driver (domains that
// cost nothing) and N instances built there by the scheduler; on each Temporal, all of them
// shelved (offloaded at once), then all unshelved, a bounded number in flight; throughput,
// latency, failures and the CPU of Temporal, PostgreSQL and the workers. The stack is left on
// the Temporal it was on.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from '@temporalio/client';
// A CommonJS module whose names Node's ESM loader cannot see: its default export holds them.
import proto from '@temporalio/proto';
import type { RequestContext } from '../lib/glance.js';
import { VmState } from '../lib/nova.js';
import { createSampleDisk, uploadBootImage } from '../lib/sample-disk.js';
import { computeTaskQueue } from '../lib/temporal.js';
import { connectClient } from '../lib/temporal-client.js';
import type { RunContext } from './context.js';
import { type Phase, phase, saturation, settleAll } from './phase.js';
import { type Components, stackComponents } from './procs.js';
import { type Figure, quantile } from './stats.js';
import { type Bench, BENCH_OWNER, benchFlavor, buildInstance, imageName, shelve, unshelve } from './vm-shelve.js';
import { testDriverHost, type WorkerProcess } from './workers.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const runDir = path.join(process.env.STACK_DIR ?? path.join(repoDir, '.stack'), 'run');

/** The part's own conductor queue and zone: only its workers take its workflows and instances. */
const TASK_QUEUE = 'bench-scale';
const ZONE = 'bench-scale';

interface Setup {
  label: string;
  /** What scripts/stack up is given to run it. */
  env: { STACK_TEMPORAL: 'dev' | 'cluster'; TEMPORAL_HISTORY_PROCESSES?: '1' | '2' };
}

const SETUPS: readonly Setup[] = [
  { label: 'dev server', env: { STACK_TEMPORAL: 'dev' } },
  { label: 'cluster, 1 history', env: { STACK_TEMPORAL: 'cluster', TEMPORAL_HISTORY_PROCESSES: '1' } },
  { label: 'cluster, 2 history', env: { STACK_TEMPORAL: 'cluster', TEMPORAL_HISTORY_PROCESSES: '2' } },
];

/** Instances per project: each project's network is a /24, 253 addresses for its ports. */
const INSTANCES_PER_PROJECT = 250;

/** The projects the instances belong to: the bench's own, then more of its name as needed. */
export function scaleOwners(instances: number): RequestContext[] {
  return Array.from({ length: Math.ceil(instances / INSTANCES_PER_PROJECT) }, (_, i) =>
    i === 0 ? BENCH_OWNER : { ...BENCH_OWNER, projectId: `${BENCH_OWNER.projectId}-${i + 1}` },
  );
}

export const SCALE_PLANS = {
  smoke: { instances: 20, hosts: 2, inFlight: 10 },
  full: { instances: 1000, hosts: 8, inFlight: 50 },
};

export interface ScalePlan {
  instances: number;
  hosts: number;
  /** Actions in flight at once: enough to keep both cores busy, few enough that none times out. */
  inFlight: number;
}

/** Whether the process in the stack's pid file NAME runs (a zombie counts as gone). */
async function running(name: string): Promise<boolean> {
  const pid = (await readFile(path.join(runDir, `${name}.pid`), 'utf8').catch(() => '')).trim();
  const stat = pid ? await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '') : '';
  return stat !== '' && stat[stat.lastIndexOf(')') + 2] !== 'Z';
}

/** The setup the stack runs now; none when its Temporal is not the stack's own. */
async function currentSetup(): Promise<Setup | undefined> {
  if (await running('temporal')) return SETUPS[0];
  if (await running('temporal-haproxy')) return (await running('temporal-history-2')) ? SETUPS[2] : SETUPS[1];
  return undefined;
}

async function switchTo(setup: Setup): Promise<void> {
  const stack = spawn('bash', [path.join(repoDir, 'scripts', 'stack'), 'up'], {
    cwd: repoDir,
    env: { ...process.env, ...setup.env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const [code] = (await once(stack, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`scripts/stack up for the ${setup.label} exited with ${code}`);
}

interface Measured {
  setup: Setup;
  shelve: Phase;
  unshelve: Phase;
  /** Instances that did not end the setup ACTIVE again: a shelve or unshelve (or, in the first, build) failed. */
  failures: number;
}

/**
 * The part's workers: a conductor, and the compute hosts. They outlive the switches (the SDK's
 * polls retry until the next Temporal answers), and so do the instances' test-driver domains,
 * which live in their compute worker's process: the instances are built once for all setups.
 */
async function startWorkers(ctx: RunContext, hosts: number): Promise<WorkerProcess[]> {
  const dir = path.join(ctx.workDir, 'scale');
  // No reconcile schedule: there is one per Temporal, shared with whoever else runs a conductor.
  const workers = [
    ctx.startWorker('scale-conductor', 'conductor', { CONDUCTOR_TASK_QUEUE: TASK_QUEUE, RECONCILE_INTERVAL: '0' }),
  ];
  for (let i = 1; i <= hosts; i++) {
    const host = `bench-scale-${i}`;
    const instancesPath = path.join(dir, `${host}-instances`);
    ctx.bench.leftovers.host(host, instancesPath);
    workers.push(
      // Room for every instance on any host: the scheduler spreads them by free memory.
      testDriverHost(dir, host, { cores: 64, memoryMib: 65536 }).then((env) =>
        ctx.startWorker(host, 'compute', {
          ...env,
          CONDUCTOR_TASK_QUEUE: TASK_QUEUE,
          INSTANCES_PATH: instancesPath,
          AVAILABILITY_ZONE: ZONE,
        }),
      ),
    );
  }
  return Promise.all(workers);
}

/** A boot image each project may use: the bench's tiny one for its own project, a copy for the others. */
async function bootImages(
  ctx: RunContext,
  owners: readonly RequestContext[],
): Promise<{ owner: RequestContext; imageRef: string }[]> {
  const disk = owners.length > 1 ? await createSampleDisk(path.join(ctx.workDir, 'scale'), 'tiny', 4) : undefined;
  return Promise.all(
    owners.map(async (owner, i) => {
      if (i === 0) return { owner, imageRef: ctx.tinyImageId };
      const id = randomUUID();
      ctx.bench.leftovers.image(id, owner);
      await uploadBootImage(ctx.bench.glance, owner, disk!.image, { id, name: imageName.boot('tiny') });
      return { owner, imageRef: id };
    }),
  );
}

/** Waits until every worker polls its task queue on the Temporal that runs now. */
async function waitForPollers(client: Client, namespace: string, workers: readonly WorkerProcess[]): Promise<void> {
  const queues = workers.map((worker) =>
    worker.name === 'scale-conductor' ? TASK_QUEUE : computeTaskQueue(worker.name),
  );
  for (const deadline = Date.now() + 120_000; ; await sleep(500)) {
    const polled = await Promise.all(
      workers.map((worker, i) =>
        client.workflowService
          .describeTaskQueue({
            namespace,
            taskQueue: { name: queues[i] },
            taskQueueType: proto.temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
          })
          .then(({ pollers }) => pollers.some((poller) => poller.identity?.startsWith(`${worker.pid}@`)))
          .catch(() => false),
      ),
    );
    if (polled.every(Boolean)) return;
    if (Date.now() > deadline) throw new Error("the scale part's workers did not poll the new Temporal within 2 min");
  }
}

/** Shelves every instance, then unshelves every one that was shelved, on the Temporal that runs now. */
async function measure(
  bench: Bench,
  setup: Setup,
  components: Components,
  instances: readonly string[],
  plan: ScalePlan,
  print: (line: string) => void,
): Promise<Measured & { active: string[] }> {
  const shelved = await phase(
    components,
    instances,
    (uuid) => shelve(bench, uuid),
    VmState.SHELVED_OFFLOADED,
    plan.inFlight,
  );
  print(`scale, ${setup.label}: shelve ${shelved.throughput.toFixed(2)}/s, ${shelved.failures} failed`);
  const unshelved = await phase(
    components,
    shelved.done,
    (uuid) => unshelve(bench, uuid),
    VmState.ACTIVE,
    plan.inFlight,
  );
  print(`scale, ${setup.label}: unshelve ${unshelved.throughput.toFixed(2)}/s, ${unshelved.failures} failed`);
  return {
    setup,
    shelve: shelved,
    unshelve: unshelved,
    failures: instances.length - unshelved.done.length,
    active: unshelved.done,
  };
}

export async function benchScale(ctx: RunContext, plan: ScalePlan): Promise<{ figures: Figure[]; notes: string[] }> {
  const { print } = ctx;
  const found = await currentSetup();
  if (!found) {
    return {
      figures: [],
      notes: ["skipped: the stack's Temporal is not its own (TEMPORAL_ADDRESS given), so the bench cannot switch it"],
    };
  }
  // Whichever way the bench ends, the stack goes back to the Temporal it was on.
  ctx.atFinish(async () => {
    if ((await currentSetup()) !== found) {
      print(`scale: putting the stack back on the ${found.label}`);
      await switchTo(found);
    }
  });
  const workers = await startWorkers(ctx, plan.hosts);
  const components = stackComponents({
    'conductor worker': workers[0]!.pid,
    'compute workers': workers.slice(1).map((worker) => worker.pid),
  });
  const measured: Measured[] = [];
  const built: string[] = [];
  try {
    let instances: string[] | undefined;
    for (const setup of SETUPS) {
      if ((await currentSetup()) !== setup) {
        print(`scale: switching the stack to the ${setup.label}`);
        await switchTo(setup);
      }
      const connection = await connectClient(ctx.bench.config);
      try {
        const { config } = ctx.bench;
        const bench: Bench = {
          ...ctx.bench,
          config: { ...config, temporal: { ...config.temporal, conductorTaskQueue: TASK_QUEUE } },
          client: new Client({ connection, namespace: config.temporal.namespace }),
        };
        await waitForPollers(bench.client, config.temporal.namespace, workers);
        if (!instances) {
          const images = await bootImages(ctx, scaleOwners(plan.instances));
          const started = performance.now();
          const flavor = benchFlavor('scale', 1, 32);
          const builds = await settleAll(
            Array.from({ length: plan.instances }, (_, i) => i % images.length),
            plan.inFlight,
            (project) =>
              buildInstance(bench, {
                availabilityZone: ZONE,
                ...images[project]!,
                flavor,
                name: 'scale',
              }),
          );
          built.push(
            ...builds.flatMap((result) => (result.status === 'fulfilled' ? [result.value.instance.uuid] : [])),
          );
          print(
            `scale: ${built.length}/${plan.instances} instances built on ${plan.hosts} hosts in ${((performance.now() - started) / 1000).toFixed(0)} s`,
          );
          instances = built;
        }
        const result = await measure(bench, setup, components, instances, plan, print);
        // The builds fail (if they do) in the first setup.
        measured.push({
          ...result,
          failures: result.failures + (measured.length === 0 ? plan.instances - built.length : 0),
        });
        instances = result.active;
      } finally {
        await connection.close();
      }
    }
  } finally {
    await settleAll(built, 20, (uuid) => ctx.bench.leftovers.removeInstance(uuid));
    await Promise.all(workers.map((worker) => worker.stop()));
  }
  return { figures: measured.flatMap(figuresOf), notes: notesOf(measured) };
}

const CPU_SHOWN = {
  temporal: 'Temporal',
  postgres: 'PostgreSQL',
  'conductor worker': 'conductor',
  'compute workers': 'compute workers',
};

function figuresOf({ setup, shelve, unshelve, failures }: Measured): Figure[] {
  const figure = (name: string, unit: string, value: number, digits = 2): Figure => ({
    section: 'scale',
    name: `${setup.label}: ${name}`,
    unit,
    samples: [value],
    digits,
  });
  return [
    ...(['shelve', 'unshelve'] as const).flatMap((action) => {
      const measured = action === 'shelve' ? shelve : unshelve;
      return [
        figure(`${action} throughput`, 'actions/s', measured.throughput),
        figure(`${action} p50 latency`, 's', quantile(measured.latencies, 0.5)),
        figure(`${action} p99 latency`, 's', quantile(measured.latencies, 0.99)),
        ...Object.entries(CPU_SHOWN).map(([component, shown]) =>
          figure(`${action} CPU, ${shown}`, '% of a core', measured.cpu.byComponent[component]!, 0),
        ),
      ];
    }),
    {
      ...figure('failed cycles (build, shelve or unshelve)', 'count', failures, 0),
      target: { bound: 'at most', value: 0 },
    },
  ];
}

/** Which component saturates in each phase, and how the setups compare. */
function notesOf(measured: readonly Measured[]): string[] {
  const cores = availableParallelism();
  const notes: string[] = [];
  for (const { setup, shelve, unshelve } of measured) {
    for (const [action, measuredPhase] of [
      ['shelve', shelve],
      ['unshelve', unshelve],
    ] as const) {
      notes.push(
        `${setup.label}, ${action}: ${saturation(measuredPhase.cpu.byComponent, measuredPhase.cpu.machine, cores, ['temporal', 'postgres', 'compute workers'])}`,
      );
    }
  }
  const [dev, one, two] = measured;
  if (!dev || !one || !two) return notes;
  // CPU seconds per action, comparable across phases of different lengths.
  const perAction = (p: Phase, component: string) =>
    ((p.cpu.byComponent[component]! / 100) * p.seconds * 1000) / Math.max(1, p.latencies.length + p.failures);
  for (const action of ['shelve', 'unshelve'] as const) {
    const [d, o, t] = [dev[action], one[action], two[action]];
    const change = ((t.throughput / o.throughput - 1) * 100).toFixed(0);
    notes.push(
      `${action}, 1 → 2 history processes: ${o.throughput.toFixed(2)} → ${t.throughput.toFixed(2)} actions/s (${Number(change) >= 0 ? '+' : ''}${change}%), ` +
        `p99 ${quantile(o.latencies, 0.99).toFixed(1)} → ${quantile(t.latencies, 0.99).toFixed(1)} s; dev server ${d.throughput.toFixed(2)} actions/s, p99 ${quantile(d.latencies, 0.99).toFixed(1)} s. ` +
        `CPU per ${action} (dev / 1 history / 2 history): Temporal ${[d, o, t].map((p) => perAction(p, 'temporal').toFixed(0)).join(' / ')} ms, ` +
        `PostgreSQL ${[d, o, t].map((p) => perAction(p, 'postgres').toFixed(0)).join(' / ')} ms`,
    );
  }
  return notes;
}
