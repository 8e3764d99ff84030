// How a shelve turns a powered-off root disk into a Glance image. Glance's upload is the
// bottleneck (one API worker, ~200 MiB/s here), so the lever is sending fewer bytes without
// spending more time making them than the upload saves. The choice is made per disk, from a
// sample of the data it would send:
// - as-is: a standalone qcow2 (any disk after its first unshelve) is already a bootable image;
//   its file is uploaded as it is, with no copy, and stays sparse.
// - flatten: an overlay is flattened into a temporary standalone qcow2 first (Nova's method,
//   without its O_DIRECT cache mode that bypasses the page cache).
// - flatten-zstd: the same with zstd-compressed clusters, when the data compresses well enough
//   that compressing costs less time than uploading the bytes it saves.
import { open } from 'node:fs/promises';
import { deflateRawSync } from 'node:zlib';
import { backingChain, type ChainImage } from './qemu-img.js';

export type SnapshotMethod = 'as-is' | 'flatten' | 'flatten-zstd';

export interface SnapshotPlan {
  method: SnapshotMethod;
  /** Compressed size over original size of the sampled data (deflate level 1, close to zstd's). */
  sampledRatio: number;
  chain: ChainImage[];
}

const SAMPLES = 64;
const SAMPLE_BYTES = 64 * 1024;

/**
 * Throughputs measured on the reference machine (2 cores, bench/RESULTS.md), in MiB/s of guest
 * data: Glance's upload, a plain flatten into the page cache, and a zstd flatten.
 */
const UPLOAD_RATE = 200;
const FLATTEN_RATE = 900;
const ZSTD_RATE = 350;

/**
 * The sampled data's compressibility: evenly spaced samples over the chain's files, weighted by
 * their allocated size. Zero samples are skipped: zero clusters are never sent either way.
 */
export async function sampleCompressionRatio(chain: ChainImage[]): Promise<number> {
  const total = chain.reduce((sum, image) => sum + image.actualSize, 0);
  let original = 0;
  let compressed = 0;
  for (const image of chain) {
    const samples = Math.max(1, Math.round((SAMPLES * image.actualSize) / Math.max(total, 1)));
    const file = await open(image.file, 'r');
    try {
      const { size } = await file.stat();
      const buffer = Buffer.alloc(SAMPLE_BYTES);
      for (let i = 0; i < samples; i++) {
        const position = Math.floor(((i + 0.5) * size) / samples);
        const { bytesRead } = await file.read(buffer, 0, SAMPLE_BYTES, position);
        const data = buffer.subarray(0, bytesRead);
        if (bytesRead === 0 || data.every((byte) => byte === 0)) continue;
        original += bytesRead;
        compressed += deflateRawSync(data, { level: 1 }).length;
      }
    } finally {
      await file.close();
    }
  }
  return original === 0 ? 1 : compressed / original;
}

/**
 * The method with the least estimated time per MiB of guest data: upload is 1/UPLOAD_RATE for
 * each MiB sent; flattening and compressing add their own cost.
 */
export function chooseMethod(standaloneQcow2: boolean, ratio: number): SnapshotMethod {
  const asIs = standaloneQcow2 ? 1 / UPLOAD_RATE : Infinity;
  const flatten = 1 / FLATTEN_RATE + 1 / UPLOAD_RATE;
  const zstd = 1 / ZSTD_RATE + ratio / UPLOAD_RATE;
  if (zstd < Math.min(asIs, flatten)) return 'flatten-zstd';
  return asIs <= flatten ? 'as-is' : 'flatten';
}

/** The plan for an instance's qcow2 root disk, whose backing chain was checked to be its own. */
export async function planSnapshot(disk: string): Promise<SnapshotPlan> {
  const chain = await backingChain(disk, 'qcow2');
  const top = chain[0]!;
  const sampledRatio = await sampleCompressionRatio(chain);
  const standaloneQcow2 = top.format === 'qcow2' && top.backingFile === null;
  return { method: chooseMethod(standaloneQcow2, sampledRatio), sampledRatio, chain };
}
