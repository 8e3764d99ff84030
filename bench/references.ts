// What vm-shelve is compared with, on the same disks in the same run:
// - Nova's method: shelve is a `qemu-img convert -O qcow2 -t none` of the powered-off disk to a
//   file, then a PUT of that file to Glance; unshelve is a download (hash checked, as
//   glanceclient does), a convert to a raw base, a qcow2 overlay on it, define and start.
// - The floor, what no method can beat on this machine: a plain PUT of a ready image file of the
//   same content; for unshelve, a plain GET to a file, define and start. Both PUTs and the GET
//   are curl's, the fastest HTTP client here (Node's own streams take up to twice as long).
// The domain's destroy, which every shelve needs, is timed by the caller and added to both.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { expectedHash, ImageDigest } from '../lib/image-hash.js';
import { type DomainDisk, domainXml } from '../lib/libvirt.js';
import { type Flavor, macAddress } from '../lib/nova.js';
import { createOverlay, imageInfo } from '../lib/qemu-img.js';
import { BENCH_OWNER, type Bench } from './vm-shelve.js';

const run = promisify(execFile);
const since = (started: number) => (performance.now() - started) / 1000;

/** qemu-img convert as Nova's libvirt driver runs it, writing past the page cache (-t none). */
async function novaConvert(source: string, target: string, format: 'qcow2' | 'raw'): Promise<void> {
  await run('qemu-img', ['convert', '-t', 'none', '-f', 'qcow2', '-O', format, source, target]);
}

export interface Upload {
  imageId: string;
  seconds: number;
  bytes: number;
}

/**
 * curl against Glance's image data, as the bench's owner. The headers (a token, with a
 * Keystone-protected Glance) go through curl's stdin, never its command line.
 */
async function curl(bench: Bench, args: string[]): Promise<void> {
  const { url } = bench.config.glance;
  const headers = await bench.glance.requestHeaders(BENCH_OWNER);
  const pending = run('curl', [
    '--fail',
    '--silent',
    '--show-error',
    '--header',
    '@-',
    ...args.map((arg) => arg.replace('{glance}', url)),
  ]);
  pending.child.stdin!.end(
    Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\n`)
      .join(''),
  );
  await pending;
}

/** A new image record (not timed), then a plain PUT of `file` into it (timed). */
export async function put(bench: Bench, file: string, name: string): Promise<Upload> {
  const imageId = randomUUID();
  bench.leftovers.image(imageId);
  await bench.glance.createImage(BENCH_OWNER, {
    id: imageId,
    name,
    owner: BENCH_OWNER.projectId,
    visibility: 'private',
    disk_format: 'qcow2',
    container_format: 'bare',
  });
  const { size } = await stat(file);
  const started = performance.now();
  await curl(bench, [
    '-X',
    'PUT',
    '-H',
    'Content-Type: application/octet-stream',
    '-T',
    file,
    `{glance}/v2/images/${imageId}/file`,
  ]);
  return { imageId, seconds: since(started), bytes: size };
}

export interface NovaSnapshot extends Upload {
  convertSeconds: number;
  /** The qcow2 Nova made: a ready image of the disk's content, which the floor uploads too. */
  file: string;
}

export async function novaShelve(bench: Bench, disk: string, workDir: string, name: string): Promise<NovaSnapshot> {
  const file = path.join(workDir, `nova-snapshot-${randomUUID()}.qcow2`);
  const started = performance.now();
  await novaConvert(disk, file, 'qcow2');
  const convertSeconds = since(started);
  return { ...(await put(bench, file, name)), convertSeconds, file };
}

/**
 * Seconds to GET the image into `file`: checking Glance's hash on the way when `verify`, as
 * glanceclient does, else a plain curl.
 */
async function download(bench: Bench, imageId: string, file: string, verify: boolean): Promise<number> {
  const started = performance.now();
  if (verify) {
    const image = await bench.glance.getImage(BENCH_OWNER, imageId);
    const expected = image && expectedHash(image);
    if (!expected) throw new Error(`image ${imageId}: Glance records no hash`);
    const digest = new ImageDigest(expected.algorithm);
    await pipeline(await bench.glance.downloadImageData(BENCH_OWNER, imageId), digest, createWriteStream(file));
    if (digest.result().osHashValue !== expected.value)
      throw new Error(`image ${imageId}: ${expected.algorithm} mismatch`);
  } else {
    await curl(bench, ['-o', file, `{glance}/v2/images/${imageId}/file`]);
  }
  return since(started);
}

/** Defines and starts a domain like the instance's on `disk`, timed; then removes it. */
async function defineAndStart(bench: Bench, flavor: Flavor, disk: DomainDisk): Promise<number> {
  const uuid = randomUUID();
  const port = { id: uuid, network: 'private', macAddress: macAddress(uuid), fixedIp: null, bindingHost: null };
  const xml = domainXml(
    { uuid, displayName: 'bench-reference', flavor, ports: [port] },
    disk,
    bench.config.compute.virtType,
  );
  bench.leftovers.domain(uuid);
  const started = performance.now();
  const domain = await (await bench.libvirt.open()).domainDefineXML(xml);
  await domain.create();
  const seconds = since(started);
  await bench.leftovers.removeDomain(uuid);
  return seconds;
}

export interface NovaUnshelve {
  downloadSeconds: number;
  convertSeconds: number;
  overlaySeconds: number;
  startSeconds: number;
}

export async function novaUnshelve(
  bench: Bench,
  imageId: string,
  flavor: Flavor,
  workDir: string,
): Promise<NovaUnshelve> {
  const dir = path.join(workDir, `nova-unshelve-${randomUUID()}`);
  await mkdir(dir, { recursive: true });
  try {
    const downloaded = path.join(dir, 'image.part');
    const base = path.join(dir, 'base');
    const disk = path.join(dir, 'disk');
    const downloadSeconds = await download(bench, imageId, downloaded, true);
    let started = performance.now();
    await novaConvert(downloaded, base, 'raw');
    const convertSeconds = since(started);
    await rm(downloaded);
    started = performance.now();
    const { virtualSize } = await imageInfo(base, 'raw');
    await createOverlay(disk, base, 'raw', Math.max(virtualSize, flavor.rootGb * 1024 ** 3));
    const overlaySeconds = since(started);
    const startSeconds = await defineAndStart(bench, flavor, { type: 'file', path: disk, format: 'qcow2' });
    return { downloadSeconds, convertSeconds, overlaySeconds, startSeconds };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface FloorUnshelve {
  downloadSeconds: number;
  startSeconds: number;
}

export async function floorUnshelve(
  bench: Bench,
  imageId: string,
  flavor: Flavor,
  workDir: string,
): Promise<FloorUnshelve> {
  const file = path.join(workDir, `floor-${randomUUID()}.qcow2`);
  try {
    const downloadSeconds = await download(bench, imageId, file, false);
    const startSeconds = await defineAndStart(bench, flavor, { type: 'file', path: file, format: 'qcow2' });
    return { downloadSeconds, startSeconds };
  } finally {
    await rm(file, { force: true });
  }
}
