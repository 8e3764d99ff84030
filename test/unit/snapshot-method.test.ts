import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert, createOverlay } from '../../lib/qemu-img.js';
import { chooseMethod, planSnapshot } from '../../lib/snapshot-method.js';

const MiB = 1024 * 1024;

describe('chooseMethod', () => {
  it('uploads a standalone qcow2 of incompressible data as it is', () => {
    expect(chooseMethod(true, 1)).toBe('as-is');
  });

  it('flattens an overlay of incompressible data', () => {
    expect(chooseMethod(false, 1)).toBe('flatten');
  });

  it('compresses with zstd only when the data compresses well', () => {
    expect(chooseMethod(true, 0.1)).toBe('flatten-zstd');
    expect(chooseMethod(false, 0.1)).toBe('flatten-zstd');
    expect(chooseMethod(true, 0.7)).toBe('as-is');
  });
});

describe('planSnapshot on real disks', () => {
  let dir: string;
  const disk = (name: string) => path.join(dir, name);

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'vm-shelve-snapshot-method-'));
    await writeFile(disk('random.raw'), randomBytes(8 * MiB));
    await writeFile(disk('text.raw'), Buffer.from('instance shelved on host compute-1\n'.repeat((8 * MiB) / 35)));
    await convert(disk('random.raw'), 'raw', disk('random.qcow2'), 'qcow2');
    await convert(disk('text.raw'), 'raw', disk('text.qcow2'), 'qcow2');
    await createOverlay(disk('overlay.qcow2'), disk('random.qcow2'), 'qcow2', 8 * MiB);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('sends a standalone qcow2 of random data as it is', async () => {
    const plan = await planSnapshot(disk('random.qcow2'));
    expect(plan.sampledRatio).toBeGreaterThan(0.95);
    expect(plan.method).toBe('as-is');
  });

  it('flattens an overlay and samples its whole backing chain', async () => {
    const plan = await planSnapshot(disk('overlay.qcow2'));
    expect(plan.chain.map((image) => path.basename(image.file))).toEqual(['overlay.qcow2', 'random.qcow2']);
    expect(plan.method).toBe('flatten');
  });

  it('compresses text with zstd', async () => {
    const plan = await planSnapshot(disk('text.qcow2'));
    expect(plan.sampledRatio).toBeLessThan(0.2);
    expect(plan.method).toBe('flatten-zstd');
  });
});
