// The benchmark: vm-shelve's shelve and unshelve on four kinds of disk beside Nova's method and
// the floor, the orchestration's overhead, scaling to many instances, the compute worker's
// memory, the test guest's clean shutdown and boot, and scale on each Temporal the stack runs.
// Run it with `npm run bench` (scripts/bench brings the stack up first); `--smoke` is a quick,
// small version. It starts its own workers and removes all it made when it ends.
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from '@temporalio/client';
import * as prettier from 'prettier';
import { loadConfig } from '../lib/config.js';
import { connectClient } from '../lib/temporal-client.js';
import { GlanceClient } from '../lib/glance.js';
import { LibvirtConnection } from '../lib/libvirt.js';
import { createPool } from '../lib/postgres.js';
import { createSampleDisk, uploadBootImage } from '../lib/sample-disk.js';
import type { RunContext } from './context.js';
import { diskPlans } from './disks.js';
import { benchDisks } from './disks-bench.js';
import { Leftovers } from './leftovers.js';
import { benchApiLoad } from './api-load.js';
import { benchGuest } from './guest.js';
import { benchOverhead } from './overhead.js';
import { describeMachine, renderResults, renderText, type Section } from './report.js';
import { benchScale, SCALE_PLANS, scaleOwners } from './scale.js';
import { benchScaling } from './scaling.js';
import { BENCH_OWNER, type Bench, imageName } from './vm-shelve.js';
import { startWorker, testDriverHost, type WorkerProcess } from './workers.js';

const PARTS = ['disks', 'overhead', 'scaling', 'load', 'guest', 'scale'] as const;

const { values: options } = parseArgs({
  options: {
    runs: { type: 'string' },
    smoke: { type: 'boolean', default: false },
    only: { type: 'string' },
    output: { type: 'string' },
  },
});
const smoke = options.smoke!;
const runs = Number(options.runs ?? (smoke ? 1 : 5));
const parts = (options.only?.split(',') ?? PARTS) as (typeof PARTS)[number][];
if (!Number.isInteger(runs) || runs < 1 || parts.some((part) => !PARTS.includes(part))) {
  console.error(`usage: npm run bench -- [--smoke] [--runs N] [--only ${PARTS.join(',')}] [--output FILE]`);
  process.exit(2);
}

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const benchDir = path.join(repoDir, '.stack', 'bench');
const logDir = path.join(repoDir, '.stack', 'logs');
const output = path.resolve(
  options.output ??
    (smoke ? path.join(repoDir, '.stack', 'bench-smoke.md') : path.join(repoDir, 'bench', 'RESULTS.md')),
);
const command = `${process.env.npm_lifecycle_event === 'bench' ? 'npm run bench' : 'bash scripts/bench'}${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
const started = Date.now();
const print = (line: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}`);

const KVM_HOST = 'bench-kvm';
const TEST_HOST = 'bench-test';
const kvmInstances = path.join(benchDir, 'instances-kvm');
const testInstances = path.join(benchDir, 'instances-test');

const config = loadConfig({
  ...process.env,
  CONDUCTOR_TASK_QUEUE: 'bench',
  COMPUTE_HOST: KVM_HOST,
  INSTANCES_PATH: kvmInstances,
});
const pool = createPool(config.databaseUrl);
const glance = new GlanceClient(config.glance);
const libvirt = new LibvirtConnection(config.compute.libvirtUri);
const connection = await connectClient(config);
const client = new Client({ connection, namespace: config.temporal.namespace });
const leftovers = new Leftovers(pool, glance, BENCH_OWNER, libvirt, {
  [KVM_HOST]: kvmInstances,
  [TEST_HOST]: testInstances,
});
const workers: WorkerProcess[] = [];
const finishTasks: (() => Promise<void>)[] = [];

let finishing: Promise<void> | undefined;
/** Stops the workers and removes everything the bench made; once, whichever way the bench ends. */
function finish(): Promise<void> {
  finishing ??= (async () => {
    await leftovers.close();
    await Promise.all(workers.map((worker) => worker.stop()));
    await leftovers.clear().catch((error: AggregateError) => {
      print(`${error.message}:`);
      for (const failure of error.errors) print(`  ${failure instanceof Error ? failure.message : String(failure)}`);
      process.exitCode = 1;
    });
    for (const task of finishTasks) {
      await task().catch((error: unknown) => {
        print(error instanceof Error ? error.message : String(error));
        process.exitCode = 1;
      });
    }
    await rm(benchDir, { recursive: true, force: true });
    await Promise.all([pool.end(), connection.close(), libvirt.close()]);
  })();
  return finishing;
}
// Should the bench itself crash, its workers must not live on, serving the bench's task queues.
process.on('exit', () => workers.forEach((worker) => worker.kill()));
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    print(`${signal}: removing what the bench made`);
    void finish().then(() => process.exit(130));
  });
}

try {
  const earlier = await leftovers.adoptPrevious(
    [
      imageName.boot('tiny'),
      imageName.boot('overlay'),
      imageName.boot('guest'),
      ...diskPlans(1).flatMap((plan) => [imageName.nova(plan.kind), imageName.floor(plan.kind)]),
    ],
    scaleOwners(SCALE_PLANS.full.instances),
  );
  if (earlier > 0) {
    print(`removing ${earlier} instance(s) and image(s) an earlier bench left`);
    await leftovers.clear();
  }
  await rm(benchDir, { recursive: true, force: true });
  await mkdir(benchDir, { recursive: true });
  const worker = (name: string, program: 'conductor' | 'compute' | 'api', env: NodeJS.ProcessEnv) =>
    startWorker(
      repoDir,
      name,
      program,
      { CONDUCTOR_TASK_QUEUE: 'bench', ...env },
      path.join(logDir, `bench-${name}.log`),
    ).then((running) => (workers.push(running), running));
  const [conductor, kvm, test, api] = await Promise.all([
    worker('conductor', 'conductor', {}),
    worker(KVM_HOST, 'compute', { COMPUTE_HOST: KVM_HOST, INSTANCES_PATH: kvmInstances }),
    testDriverHost(benchDir, TEST_HOST).then((env) =>
      worker(TEST_HOST, 'compute', { ...env, INSTANCES_PATH: testInstances }),
    ),
    worker('api', 'api', { API_HOST: '127.0.0.1', API_PORT: '0', AUTH_STRATEGY: 'noauth2' }),
  ]);
  print(
    `workers started (logs: .stack/logs/bench-*.log): conductor ${conductor.pid}, ${KVM_HOST} ${kvm.pid}, ${TEST_HOST} ${test.pid}, API ${api.pid} at ${String(api.ready.address)}`,
  );

  const bench: Bench = { config, client, pool, glance, libvirt, leftovers };
  const tiny = await createSampleDisk(path.join(benchDir, 'work'), 'tiny', 4);
  const tinyImageId = randomUUID();
  leftovers.image(tinyImageId);
  await uploadBootImage(glance, BENCH_OWNER, tiny.image, { id: tinyImageId, name: imageName.boot('tiny') });
  const ctx: RunContext = {
    bench,
    runs,
    workDir: path.join(benchDir, 'work'),
    kvm: { host: KVM_HOST, instancesPath: kvmInstances, pid: kvm.pid },
    test: { host: TEST_HOST, instancesPath: testInstances, pid: test.pid },
    conductorPid: conductor.pid,
    api: { url: String(api.ready.address), pid: api.pid },
    tinyImageId,
    print,
    startWorker: (name, program, env) => worker(name, program, env),
    atFinish: (task) => finishTasks.push(task),
  };

  const plans = diskPlans(smoke ? 32 : 1);
  const sections: Section[] = [];
  if (parts.includes('disks')) {
    const disks = await benchDisks(ctx, plans);
    sections.push(
      { title: 'Shelve: request → SHELVED_OFFLOADED (seconds)', figures: disks.shelve, notes: [] },
      { title: 'Unshelve: request → ACTIVE, domain running (seconds)', figures: disks.unshelve, notes: [] },
      { title: 'Parts of the references, and sizes', figures: disks.parts, notes: [] },
      { title: 'Memory', figures: disks.memory, notes: [] },
    );
  }
  if (parts.includes('overhead')) {
    sections.push({
      title: 'Orchestration overhead, tiny disk (ms per action)',
      figures: await benchOverhead(ctx),
      notes: [],
    });
  }
  if (parts.includes('scaling')) {
    const scaling = await benchScaling(ctx, smoke ? [1, 2] : [1, 10, 50]);
    sections.push({ title: 'Scaling: N instances shelved, then unshelved, at once', ...scaling });
  }

  if (parts.includes('load')) {
    const plan = smoke
      ? { rate: 200, idleSeconds: 2, loadedSeconds: 5, instances: 4 }
      : { rate: 200, idleSeconds: 15, loadedSeconds: 60, instances: 20 };
    sections.push({
      title: 'API read load: GET /v2.1/servers/{id} while actions run',
      ...(await benchApiLoad(ctx, plan)),
    });
  }

  if (parts.includes('guest')) {
    sections.push({
      title: 'The test guest: clean shutdown, shelve, unshelve, boot (seconds)',
      figures: await benchGuest(ctx),
      notes: [],
    });
  }

  // Last: it switches the stack's Temporal under the workers above.
  if (parts.includes('scale')) {
    const plan = smoke ? SCALE_PLANS.smoke : SCALE_PLANS.full;
    sections.push({
      title: `Scale: ${plan.instances} instances on ${plan.hosts} test-driver hosts, shelved then unshelved, ${plan.inFlight} in flight`,
      ...(await benchScale(ctx, plan)),
    });
  }

  console.log(renderText(sections));
  const machine = await describeMachine(pool, config.compute.virtType);
  const results = renderResults({
    command,
    date: new Date(),
    durationSeconds: (Date.now() - started) / 1000,
    machine,
    method: methodNotes(plans, runs),
    sections,
    limits: await readFile(path.join(repoDir, 'bench', 'limits.md'), 'utf8'),
  });
  // Formatted as `npm run lint` wants it, so that the committed file passes prettier --check.
  const style = await prettier.resolveConfig(output);
  await writeFile(output, await prettier.format(results, { ...style, filepath: output }));
  print(`results written to ${path.relative(process.cwd(), output)}`);
} catch (error) {
  print(`the bench failed: ${error instanceof Error ? error.stack : String(error)}`);
  process.exitCode = 1;
} finally {
  await finish();
}

function methodNotes(plans: ReturnType<typeof diskPlans>, runs: number): string[] {
  return [
    `${runs} run(s) per figure${smoke ? ' (--smoke: disk sizes divided by 32, scaling to N = 2 only, scale with 20 instances on 2 hosts: a check that the bench works, not a measure)' : ''}. Workers of the bench's own: a conductor on task queue \`bench\` and compute workers \`${KVM_HOST}\` (qemu:///system, ${config.compute.virtType}) and \`${TEST_HOST}\` (libvirt's test driver), each a process of its own as in \`npm run demo\`.`,
    'In the disk parts (disks, overhead, scaling, load), shelve runs with `shutdownTimeout: 0` and `shelvedOffloadTime: 0`: their guests have no operating system, so they ignore the ACPI shutdown request and a clean shutdown would cost the whole timeout (60 s by default) before the destroy. Every shelve there is a destroy, as are the references. The guest part shuts its guest down cleanly.',
    "vm-shelve's figures run from the request (the workflow's start) to the workflow's result: for shelve the instance is SHELVED_OFFLOADED (image uploaded, domain and files gone); for unshelve it is ACTIVE with its domain running on the bench's KVM host (named in the request), and its snapshot image deleted.",
    ...plans.map(
      (plan) =>
        `Disk **${plan.title}**: ${plan.description}. Flavor root_gb ${plan.rootGb}, 128 MiB of memory, 1 vCPU.`,
    ),
    "The standalone disks are what an instance's root disk is after an unshelve: the bench builds the instance from a 4 MiB image, then swaps its disk for the prepared file with the domain off. Before each run the instance's disk is put back to the prepared file, so every run shelves the same disk.",
    "Nova's method, shelve: the domain's destroy, `qemu-img convert -t none -f qcow2 -O qcow2` of the instance's disk (domain off) to a file, then one HTTP PUT of that file to a new Glance image. Unshelve: a GET of that image to a file with its sha512 checked against Glance's (as glanceclient does), `qemu-img convert -t none -O raw` to a base, `qemu-img create -f qcow2 -b base -F raw` at root_gb, then define and start a domain like the instance's.",
    "The floor, shelve: the domain's destroy plus one plain PUT to Glance of the same qcow2 file Nova's method made (a ready image of the same content). Unshelve: one plain GET of it to a file, then define and start. The destroy is timed on the instance's own domain after each unshelve; creating the image records is not timed in the references.",
    'Ratios are per run (vm-shelve and its references measured on the same disk in the same run), then min / median / max over the runs.',
    'All disk files were written just before they are read, so every method reads them from the page cache alike.',
    "Overhead: a new instance with a 4 MiB disk is built, shelved and unshelved per run; each action's time from request to result minus the time during which at least one of its activities ran (ActivityTaskStarted to its end, from the workflow history). Local activities (the actions-log rows) count from the start of the workflow task that ran them to their marker's completion time.",
    `Scaling: N instances with a 4 MiB disk on \`${TEST_HOST}\`, libvirt's test driver (domains that cost nothing, so the stack is measured, not QEMU): N builds, then N shelves started at once, then N unshelves at once. Throughput is the actions that ended well over the phase's wall time; latency is each action's request to result. CPU is read from /proc (utime + stime, children included) for each component, in % of one core. The test driver runs from a node file that defines a storage pool, rather than test:///default: a compute worker defines its pool with separate virsh runs at start, and each run sees a fresh test:///default, so the worker cannot start on it.`,
    'API load: one run (a minute of requests holds thousands of samples; its percentiles are over all of them). The API runs as its own process, as `npm run api` starts it, with noauth2 tokens on loopback.',
    `Guest: one instance of the project's test guest (docs/guest.md: a 12 MiB qcow2, Linux and busybox) on \`${KVM_HOST}\` (${config.compute.virtType}), 1 vCPU, 256 MiB, root_gb 1, which takes its port's fixed IP by DHCP from the host's libvirt network. Per run it is shelved with the default shutdown timeout (${config.shutdownTimeout} s) and \`shelvedOffloadTime: 0\`, then unshelved on the same host. *Clean shutdown* runs from the shelve request (the workflow's start) until libvirt shows the domain shut off, read through the libvirt binding every 50 ms; each run then checks that \`virsh domstate --reason\` says \`shut off (shutdown)\` (the guest powered itself off, not destroyed) and fails otherwise. *Shelve* runs to the workflow's result, SHELVED_OFFLOADED; its power-off step checks the domain right after the ACPI request and then once a second (as Nova's \`_clean_shutdown\`), so up to a second of it is the wait for that check. *Unshelve → ACTIVE* runs to the workflow's result; *→ guest answering* until a TCP connection to the guest's port 7 at its fixed IP (a new attempt every 250 ms, so that TCP's own SYN retry, 1 s later, does not count) has answered \`ping\` with that IP; *guest boot* is the difference (firmware, kernel, DHCP, the protocol's listener).`,
    "Scale: one run per Temporal setup (a thousand actions per phase hold their own percentiles), in this order: the dev server (`STACK_TEMPORAL=dev`), the cluster profile with one history process, then with two (`STACK_TEMPORAL=cluster TEMPORAL_HISTORY_PROCESSES=1|2`); the bench switches the stack with `scripts/stack up` and puts it back on the setup it found. A conductor (task queue `bench-scale`, no reconcile schedule) and compute workers `bench-scale-1`… on libvirt's test driver, in an availability zone of their own, run through all setups (their polls retry until the next Temporal answers), and so do the instances' test-driver domains: N instances with a 4 MiB disk (flavor 32 MiB, 1 vCPU, root_gb 1), 250 per project (a project's network is a /24), are built once by the scheduler, on the dev server. On each setup all of them are shelved (offloaded at once), then all unshelved (the scheduler places them again), a bounded number in flight so that both cores stay busy and no action waits past its timeouts. Throughput, latency and failures as in Scaling, p50 and p99; CPU in % of one core over the phase: Temporal (the dev server, or the cluster's six server processes and its HAProxy), every PostgreSQL process (the stack's and Temporal's databases share the server), the conductor, the compute workers summed.",
    "Memory: the compute worker's VmRSS, read from /proc every 50 ms during each shelve of the sparse disk: its peak, its value as the shelve starts, and the peak with its child processes (the qemu-img it runs) added.",
  ];
}
