// Sections 1, 2 and 5: each disk shelved and unshelved by vm-shelve, beside Nova's method and
// the floor in the same run, and the compute worker's memory while it shelves the sparse disk.
import { randomUUID } from 'node:crypto';
import { copyFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { rootDiskPath } from '../lib/host-paths.js';
import { VmState } from '../lib/nova.js';
import { uploadBootImage } from '../lib/sample-disk.js';
import type { RunContext } from './context.js';
import { type DiskPlan, makeBaseImage, makeStandaloneDisk, MiB, writeIntoOverlay } from './disks.js';
import { memorySampler } from './procs.js';
import { floorUnshelve, novaShelve, novaUnshelve, put } from './references.js';
import { type Figure, ratios } from './stats.js';
import {
  BENCH_OWNER,
  benchFlavor,
  buildInstance,
  imageName,
  isRunning,
  replaceRootDisk,
  shelve,
  startDomain,
  stopDomain,
  timedDestroy,
  unshelve,
} from './vm-shelve.js';

/** Shelve must beat Nova's method by this much, per disk (the targets). */
const VERSUS_NOVA: Partial<Record<DiskPlan['kind'], number>> = { random: 0.85, sparse: 0.8, compressible: 0.6 };

export interface DiskFigures {
  shelve: Figure[];
  unshelve: Figure[];
  parts: Figure[];
  memory: Figure[];
}

/** Samples of one disk, one entry per run. */
class Samples {
  private readonly values = new Map<string, number[]>();
  add(entries: Record<string, number>): void {
    for (const [name, value] of Object.entries(entries)) this.values.set(name, [...this.get(name), value]);
  }
  get(name: string): number[] {
    return this.values.get(name) ?? [];
  }
  sum(...names: string[]): number[] {
    return this.get(names[0]!).map((_, run) => names.reduce((total, name) => total + this.get(name)[run]!, 0));
  }
}

/**
 * An instance on the KVM host whose root disk is the plan's: built from the tiny image with
 * its disk then swapped for the prepared standalone one, or, for the overlay, built from the
 * plan's boot image with random data then written into its overlay. Returns the instance and the
 * file holding its disk as it must be at the start of every run.
 */
async function prepareInstance(
  ctx: RunContext,
  plan: DiskPlan,
): Promise<{ uuid: string; disk: string; bootImage?: string }> {
  const { bench, kvm, workDir } = ctx;
  const flavor = benchFlavor(plan.kind, plan.rootGb);
  if (plan.kind !== 'overlay') {
    const disk = await makeStandaloneDisk(plan, workDir);
    const { instance } = await buildInstance(bench, {
      host: kvm.host,
      imageRef: ctx.tinyImageId,
      flavor,
      name: plan.kind,
    });
    await replaceRootDisk(bench, kvm.instancesPath, instance.uuid, disk);
    return { uuid: instance.uuid, disk };
  }
  const base = await makeBaseImage(plan, workDir);
  const bootImage = randomUUID();
  bench.leftovers.image(bootImage);
  await uploadBootImage(bench.glance, BENCH_OWNER, base, { id: bootImage, name: imageName.boot('overlay') });
  await rm(base);
  const { instance } = await buildInstance(bench, { host: kvm.host, imageRef: bootImage, flavor, name: plan.kind });
  const overlay = rootDiskPath(kvm.instancesPath, instance.uuid);
  await stopDomain(bench, instance.uuid);
  await writeIntoOverlay(plan, overlay, workDir);
  const disk = path.join(workDir, 'overlay.qcow2');
  await copyFile(overlay, disk);
  await startDomain(bench, instance.uuid);
  return { uuid: instance.uuid, disk, bootImage };
}

/**
 * Measures one disk. `previous` is the removal of the disk before, which runs while this one is
 * made (nothing is timed then); returns this disk's removal, still running.
 */
async function benchDisk(
  ctx: RunContext,
  plan: DiskPlan,
  figures: DiskFigures,
  previous: Promise<void>,
): Promise<{ removal: Promise<void> }> {
  const { bench, kvm, workDir, print } = ctx;
  print(`${plan.title}: making the disk and its instance`);
  const flavor = benchFlavor(plan.kind, plan.rootGb);
  const { uuid, disk, bootImage } = await prepareInstance(ctx, plan);
  await previous;
  const instanceDisk = rootDiskPath(kvm.instancesPath, uuid);
  const samples = new Samples();

  for (let run = 1; run <= ctx.runs; run++) {
    // The instance is ACTIVE, its domain running on the prepared disk.
    const memory = plan.kind === 'sparse' ? memorySampler(kvm.pid) : undefined;
    const shelved = await shelve(bench, uuid);
    const peak = await memory?.stop();
    if (shelved.instance.vmState !== VmState.SHELVED_OFFLOADED) {
      throw new Error(`shelve left ${uuid} ${shelved.instance.vmState}`);
    }
    const snapshot = await bench.glance.getImage(
      bench.glance.snapshotContext,
      shelved.instance.systemMetadata.shelved_image_id!,
    );
    const unshelved = await unshelve(bench, uuid, kvm.host);
    if (unshelved.instance.vmState !== VmState.ACTIVE || !(await isRunning(bench, uuid))) {
      throw new Error(`unshelve left ${uuid} ${unshelved.instance.vmState}, its domain not running`);
    }

    // The references, on the same disk: the instance's own file, put back as it was, domain off.
    const destroy = await timedDestroy(bench, uuid);
    await replaceRootDisk(bench, kvm.instancesPath, uuid, disk, { start: false });
    const nova = await novaShelve(bench, instanceDisk, workDir, imageName.nova(plan.kind));
    const floor = await put(bench, nova.file, imageName.floor(plan.kind));
    await rm(nova.file);
    const novaBack = await novaUnshelve(bench, nova.imageId, flavor, workDir);
    const floorBack = await floorUnshelve(bench, floor.imageId, flavor, workDir);
    await bench.leftovers.removeImage(nova.imageId);
    await bench.leftovers.removeImage(floor.imageId);
    await startDomain(bench, uuid);

    samples.add({
      shelve: shelved.seconds,
      unshelve: unshelved.seconds,
      destroy,
      novaConvert: nova.convertSeconds,
      novaPut: nova.seconds,
      floorPut: floor.seconds,
      novaDownload: novaBack.downloadSeconds,
      novaRaw: novaBack.convertSeconds,
      novaOverlay: novaBack.overlaySeconds,
      novaStart: novaBack.startSeconds,
      floorDownload: floorBack.downloadSeconds,
      floorStart: floorBack.startSeconds,
      uploadedMiB: (snapshot?.size ?? NaN) / MiB,
      qcow2MiB: nova.bytes / MiB,
      putRate: nova.bytes / MiB / floor.seconds,
      ...(peak && { rssBefore: peak.before, rss: peak.rss, treeRss: peak.treeRss }),
    });
    print(
      `${plan.title} run ${run}/${ctx.runs}: shelve ${shelved.seconds.toFixed(2)} s ` +
        `(Nova ${(destroy + nova.convertSeconds + nova.seconds).toFixed(2)}, floor ${(destroy + floor.seconds).toFixed(2)}), ` +
        `unshelve ${unshelved.seconds.toFixed(2)} s ` +
        `(Nova ${(novaBack.downloadSeconds + novaBack.convertSeconds + novaBack.overlaySeconds + novaBack.startSeconds).toFixed(2)}, ` +
        `floor ${(floorBack.downloadSeconds + floorBack.startSeconds).toFixed(2)})` +
        (peak ? `, compute worker peak RSS ${peak.rss.toFixed(0)} MiB` : ''),
    );
  }

  const removal = (async () => {
    await bench.leftovers.removeInstance(uuid);
    await rm(disk);
    if (bootImage) {
      await bench.leftovers.removeImage(bootImage);
      await rm(path.join(kvm.instancesPath, '_base', bootImage), { force: true });
    }
  })();
  // Awaited by the next disk; until then a failure must not count as unhandled.
  removal.catch(() => undefined);

  const t = plan.title;
  const novaShelveTotal = samples.sum('destroy', 'novaConvert', 'novaPut');
  const floorShelveTotal = samples.sum('destroy', 'floorPut');
  const novaUnshelveTotal = samples.sum('novaDownload', 'novaRaw', 'novaOverlay', 'novaStart');
  const floorUnshelveTotal = samples.sum('floorDownload', 'floorStart');
  figures.shelve.push(
    ...comparison('shelve', t, samples.get('shelve'), novaShelveTotal, floorShelveTotal, VERSUS_NOVA[plan.kind]),
  );
  figures.unshelve.push(
    ...comparison('unshelve', t, samples.get('unshelve'), novaUnshelveTotal, floorUnshelveTotal, 0.7),
  );
  const part = (name: string, unit: string, key: string, digits = 2): Figure => ({
    section: 'parts',
    name: `${t}: ${name}`,
    unit,
    samples: samples.get(key),
    digits,
  });
  figures.parts.push(
    part('image vm-shelve uploaded', 'MiB', 'uploadedMiB', 1),
    part('qcow2 image Nova and the floor uploaded', 'MiB', 'qcow2MiB', 1),
    part('domain destroy (in both shelve references)', 's', 'destroy'),
    part("Nova's qemu-img convert", 's', 'novaConvert'),
    part("Nova's PUT", 's', 'novaPut'),
    part('floor PUT', 's', 'floorPut'),
    part('Glance PUT rate (floor)', 'MiB/s', 'putRate', 0),
    part("Nova's download, sha512 checked", 's', 'novaDownload'),
    part("Nova's convert to a raw base", 's', 'novaRaw'),
    part("Nova's overlay on the base", 's', 'novaOverlay'),
    part("Nova's define + start", 's', 'novaStart'),
    part('floor GET', 's', 'floorDownload'),
    part('floor define + start', 's', 'floorStart'),
  );
  if (plan.kind === 'sparse') {
    figures.memory.push(
      {
        section: 'memory',
        name: `compute worker peak RSS while shelving the ${t} disk`,
        unit: 'MiB',
        samples: samples.get('rss'),
        target: { bound: 'at most', value: 200 },
        digits: 0,
      },
      {
        section: 'memory',
        name: 'compute worker RSS as the shelve starts',
        unit: 'MiB',
        samples: samples.get('rssBefore'),
        digits: 0,
      },
      {
        section: 'memory',
        name: 'compute worker peak RSS with its child processes (qemu-img)',
        unit: 'MiB',
        samples: samples.get('treeRss'),
        digits: 0,
      },
    );
  }
  return { removal };
}

export async function benchDisks(ctx: RunContext, plans: readonly DiskPlan[]): Promise<DiskFigures> {
  const figures: DiskFigures = { shelve: [], unshelve: [], parts: [], memory: [] };
  let removal = Promise.resolve();
  for (const plan of plans) ({ removal } = await benchDisk(ctx, plan, figures, removal));
  await removal;
  return figures;
}

/** vm-shelve's times beside Nova's method and the floor, and its ratios to each, with their targets. */
function comparison(
  section: 'shelve' | 'unshelve',
  title: string,
  ours: number[],
  nova: number[],
  floor: number[],
  versusNova: number | undefined,
): Figure[] {
  return [
    { section, name: `${title}: vm-shelve`, unit: 's', samples: ours },
    { section, name: `${title}: Nova's method`, unit: 's', samples: nova },
    { section, name: `${title}: floor`, unit: 's', samples: floor },
    {
      section,
      name: `${title}: vm-shelve / Nova's method`,
      unit: 'ratio',
      samples: ratios(ours, nova),
      ...(versusNova && { target: { bound: 'at most', value: versusNova } }),
    },
    {
      section,
      name: `${title}: vm-shelve / floor`,
      unit: 'ratio',
      samples: ratios(ours, floor),
      target: { bound: 'at most', value: 1.1 },
    },
  ];
}
