// The disks the bench shelves, made once per run (not timed). Three are standalone qcow2 files,
// what an instance's root disk is after its first unshelve; the fourth is the usual disk of a
// built instance, a qcow2 overlay on its boot image cached under _base.
import { execFile } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { convert } from '../lib/qemu-img.js';

const run = promisify(execFile);
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export type DiskKind = 'random' | 'sparse' | 'compressible' | 'overlay';

export interface DiskPlan {
  kind: DiskKind;
  title: string;
  /** What the disk holds, for RESULTS.md. */
  description: string;
  /** The flavor's root_gb: at least the disk's virtual size. */
  rootGb: number;
  virtualBytes: number;
  /** Bytes of data the guest sees (not zeros). */
  dataBytes: number;
  /** Overlay only: the boot image's size (all random) under the overlay's `dataBytes`. */
  baseBytes?: number;
}

const size = (bytes: number) => (bytes >= GiB ? `${bytes / GiB} GiB` : `${bytes / MiB} MiB`);

/** The four disks; `scale` divides the sizes (1 for the real bench, 32 for the smoke run). */
export function diskPlans(scale: number): DiskPlan[] {
  const random = (2 * GiB) / scale;
  const sparse = (4 * GiB) / scale;
  const compressible = (2 * GiB) / scale;
  const base = GiB / scale;
  const overlayData = (256 * MiB) / scale;
  const overlayRootGb = Math.max(1, 2 / scale);
  const rootGb = (bytes: number) => Math.max(1, Math.ceil(bytes / GiB));
  return [
    {
      kind: 'random',
      title: `random ${size(random)}`,
      description: `standalone qcow2, ${size(random)} virtual, every byte random (nothing to compress or skip)`,
      rootGb: rootGb(random),
      virtualBytes: random,
      dataBytes: random,
    },
    {
      kind: 'sparse',
      title: `sparse ${size(sparse)}`,
      description:
        `standalone qcow2, ${size(sparse)} virtual, ${size(sparse / 4)} of random data written as 1 MiB ` +
        'at the start of every 4 MiB, the rest never written (unallocated)',
      rootGb: rootGb(sparse),
      virtualBytes: sparse,
      dataBytes: sparse / 4,
    },
    {
      kind: 'compressible',
      title: `compressible ${size(compressible)}`,
      description:
        `standalone qcow2, ${size(compressible)} virtual, every byte written with repeated log-like ` +
        'text lines (no zero blocks; gzip takes it to a few % of its size)',
      rootGb: rootGb(compressible),
      virtualBytes: compressible,
      dataBytes: compressible,
    },
    {
      kind: 'overlay',
      title: `overlay ${size(overlayRootGb * GiB)}`,
      description:
        `qcow2 overlay (${overlayRootGb} GiB virtual, the flavor's root_gb) made by the build on the cached ` +
        `boot image (${size(base)} of random data), then ${size(overlayData)} of random data written into ` +
        `the overlay as 4 MiB pieces spread evenly over the ${overlayRootGb} GiB`,
      rootGb: overlayRootGb,
      virtualBytes: overlayRootGb * GiB,
      dataBytes: overlayData,
      baseBytes: base,
    },
  ];
}

type Fill = 'random' | 'text';

function fillBuffer(buffer: Buffer, fill: Fill, offset: number): void {
  if (fill === 'random') {
    randomFillSync(buffer);
    return;
  }
  const line = `${offset.toString(16).padStart(12, '0')} INFO disk-filler: the same few words, again and again\n`;
  buffer.fill(line);
}

/** A raw file of `virtualBytes` with `length` bytes of `fill` at the start of every `stride`. */
async function writeRaw(file: string, virtualBytes: number, fill: Fill, stride: number, length: number) {
  const handle = await open(file, 'w');
  const buffer = Buffer.alloc(Math.min(4 * MiB, length));
  try {
    await handle.truncate(virtualBytes);
    for (let start = 0; start < virtualBytes; start += stride) {
      for (let done = 0; done < length; done += buffer.length) {
        fillBuffer(buffer, fill, start + done);
        await handle.write(buffer, 0, buffer.length, start + done);
      }
    }
  } finally {
    await handle.close();
  }
}

/** A standalone qcow2 with the plan's content (random, sparse or compressible). */
export async function makeStandaloneDisk(plan: DiskPlan, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const raw = path.join(dir, `${plan.kind}.raw`);
  const qcow2 = path.join(dir, `${plan.kind}.qcow2`);
  if (plan.kind === 'sparse') await writeRaw(raw, plan.virtualBytes, 'random', 4 * MiB, MiB);
  else
    await writeRaw(
      raw,
      plan.virtualBytes,
      plan.kind === 'random' ? 'random' : 'text',
      plan.virtualBytes,
      plan.virtualBytes,
    );
  // qemu-img leaves the never-written parts unallocated, as a guest's disk has them.
  await convert(raw, 'raw', qcow2, 'qcow2');
  await rm(raw);
  return qcow2;
}

/** The overlay case's boot image: `baseBytes` of random data as a qcow2. */
export async function makeBaseImage(plan: DiskPlan, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const raw = path.join(dir, 'base.raw');
  const qcow2 = path.join(dir, 'base.qcow2');
  await writeRaw(raw, plan.baseBytes!, 'random', plan.baseBytes!, plan.baseBytes!);
  await convert(raw, 'raw', qcow2, 'qcow2');
  await rm(raw);
  return qcow2;
}

/**
 * Writes the plan's `dataBytes` of random data into an instance's qcow2 overlay (its domain
 * off), 4 MiB at a time spread evenly over the disk: new clusters of the overlay, as a guest's writes.
 */
export async function writeIntoOverlay(plan: DiskPlan, overlay: string, dir: string): Promise<void> {
  const piece = 4 * MiB;
  const pieces = plan.dataBytes / piece;
  const stride = Math.floor(plan.virtualBytes / pieces / piece) * piece;
  const commands: string[] = [];
  const sources: string[] = [];
  for (let i = 0; i < pieces; i++) {
    const source = path.join(dir, `overlay-piece-${i}`);
    const data = Buffer.alloc(piece);
    randomFillSync(data);
    await writeFile(source, data);
    sources.push(source);
    commands.push('-c', `write -s ${source} ${i * stride} ${piece}`);
  }
  try {
    await run('qemu-io', ['-f', 'qcow2', ...commands, overlay], { maxBuffer: 16 * MiB });
  } finally {
    await Promise.all(sources.map((source) => rm(source, { force: true })));
  }
}
