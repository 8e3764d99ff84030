// lib/format-inspector.ts against images qemu-img itself makes, one describe per format. One
// file, longer than 300 lines, on purpose: beforeAll makes every sample image at once, in
// parallel, and cases cross formats (a qcow2 that is also an ISO, checkImage of each format), so a
// split by format would repeat the fixtures and their helpers in every part.
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkImage,
  ImageFormatError,
  imageRefusal,
  INSPECTION_BYTES,
  inspectImage,
  inspectImageFile,
} from '../../lib/format-inspector.js';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

let dir: string;
const file = (name: string) => path.join(dir, name);

async function create(format: string, name: string, size: string, ...options: string[]) {
  await run('qemu-img', ['create', '-q', '-f', format, ...options, file(name), size]);
}

/** A LUKS or LUKS-encrypted image; qemu-img times PBKDF2 on a CPU clock that may read 0 ms, and then fails. */
async function createEncrypted(format: string, name: string, options: string) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await create(format, name, '1M', '--object', 'secret,id=sec0,data=hunter2', '-o', options);
    } catch (error) {
      if (attempt === 5) throw error;
    }
  }
}

/** What qemu-img makes of an image; it opens the files the image names, so only harmless ones here. */
async function qemuInfo(name: string): Promise<{ format: string; 'virtual-size': number }> {
  return JSON.parse((await run('qemu-img', ['info', '--output=json', file(name)])).stdout);
}

/** Overwrites bytes of a copy of `source`. */
async function patched(source: string, name: string, offset: number, bytes: Buffer) {
  await copyFile(file(source), file(name));
  const handle = await open(file(name), 'r+');
  await handle.write(bytes, 0, bytes.length, offset);
  await handle.close();
}

const u32 = (value: number) => Buffer.from([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);

/** The ImageFormatError message `promise` rejects with. */
async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => null,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ImageFormatError);
  return (error as Error).message;
}
const refused = (name: string) => refusal(inspectImageFile(file(name)));
const refusedSync = (check: () => unknown) => refusal(Promise.resolve().then(check));

const descriptor = (createType: string, ...extents: string[]) =>
  [
    '# Disk DescriptorFile',
    'version=1',
    'CID=fffffffe',
    'parentCID=ffffffff',
    `createType="${createType}"`,
    '',
    '# Extent description',
    ...extents,
    '',
    '# The Disk Data Base',
    '#DDB',
    'ddb.virtualHWVersion = "4"',
    '',
  ].join('\n');

/** sparse.vmdk with another embedded descriptor (sectors 1 to 20, NUL-padded). */
async function sparseVmdkWith(name: string, text: string) {
  const bytes = Buffer.from(text);
  await patched('sparse.vmdk', name, 512, Buffer.concat([bytes, Buffer.alloc(20 * 512 - bytes.length)]));
}

/** An ISO 9660 volume of `blocks` 2 KiB blocks (only its primary volume descriptor), padded as mkisofs does. */
function isoImage(blocks: number): Buffer {
  const image = Buffer.alloc((blocks + 150) * 2 * KiB);
  const pvd = 32 * KiB;
  image.write('\x01CD001\x01', pvd, 'latin1');
  image.writeUInt32LE(blocks, pvd + 80);
  image.writeUInt32BE(blocks, pvd + 84);
  image.writeUInt16LE(2 * KiB, pvd + 128);
  image.writeUInt16BE(2 * KiB, pvd + 130);
  return image;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vm-shelve-format-inspector-'));
  await Promise.all([
    create('qcow2', 'v3.qcow2', '1G'),
    create('qcow2', 'v2.qcow2', '1G', '-o', 'compat=0.10'),
    create('qcow2', 'extended-l2.qcow2', '1G', '-o', 'extended_l2=on'),
    create('qcow2', 'huge.qcow2', '1P'),
    create('qcow2', 'backing.qcow2', '1M', '-b', '/etc/hostname', '-F', 'raw'),
    create('qcow2', 'data-file.qcow2', '1M', '-o', `data_file=${file('data.raw')}`),
    createEncrypted('qcow2', 'encrypted.qcow2', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100'),
    createEncrypted('luks', 'disk.luks', 'key-secret=sec0,iter-time=100'),
    create('vmdk', 'sparse.vmdk', '1G'),
    create('vmdk', 'stream.vmdk', '1G', '-o', 'subformat=streamOptimized'),
    create('vpc', 'disk.vhd', '1G'),
    create('vhdx', 'disk.vhdx', '3G'),
    create('vdi', 'disk.vdi', '2G'),
    create('qed', 'disk.qed', '5G'),
    create('qed', 'backing.qed', '1M', '-b', '/etc/hostname', '-F', 'raw'),
    create('raw', 'disk.raw', '8M'),
  ]);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('qcow2', () => {
  it('reads a plain qcow2 (v3) and its virtual size, and lets it through as qcow2', async () => {
    const inspected = await inspectImageFile(file('v3.qcow2'));
    expect(inspected).toEqual({ format: 'qcow2', virtualSize: GiB });
    expect(checkImage(inspected, { diskFormat: 'qcow2', maxVirtualSize: GiB })).toBe(inspected);
  });

  it('reads a qcow2 v2 (compat=0.10), which has no feature bits', async () => {
    expect((await readFile(file('v2.qcow2'))).readUInt32BE(4)).toBe(2);
    expect(await inspectImageFile(file('v2.qcow2'))).toEqual({ format: 'qcow2', virtualSize: GiB });
  });

  it('accepts the known incompatible features (extended L2 entries)', async () => {
    expect(await inspectImageFile(file('extended-l2.qcow2'))).toEqual({ format: 'qcow2', virtualSize: GiB });
  });

  it('refuses a backing file', async () => {
    expect(await refused('backing.qcow2')).toBe('qcow2 image has a backing file');
  });

  it('refuses an external data file, by its feature bit and by its header extension', async () => {
    expect(await refused('data-file.qcow2')).toBe('qcow2 image has an external data file');
    const header = await readFile(file('data-file.qcow2'));
    // Without the feature bit, the extension naming the file is still there.
    await patched('data-file.qcow2', 'data-file-no-bit.qcow2', 79, Buffer.from([header[79]! & ~0x04]));
    expect(await refused('data-file-no-bit.qcow2')).toBe('qcow2 image has an external data file');
    // With the extension renamed to an unknown one, the feature bit still says there is a data file.
    const extension = header.indexOf(u32(0x44415441), header.readUInt32BE(100));
    await patched('data-file.qcow2', 'data-file-no-extension.qcow2', extension, u32(0x12345678));
    expect(await refused('data-file-no-extension.qcow2')).toBe('qcow2 image has an external data file');
  });

  it('refuses unknown incompatible features', async () => {
    await patched('v3.qcow2', 'unknown-feature.qcow2', 72, Buffer.from([0x01]));
    expect(await refused('unknown-feature.qcow2')).toBe('qcow2 image has unknown incompatible features');
  });

  it('refuses an encrypted qcow2', async () => {
    expect((await readFile(file('encrypted.qcow2'))).readUInt32BE(32)).toBe(2);
    expect(await refused('encrypted.qcow2')).toBe('qcow2 image is encrypted');
  });

  it('refuses a header extension running past the first cluster', async () => {
    const extensions = (await readFile(file('v3.qcow2'))).readUInt32BE(100);
    await patched('v3.qcow2', 'long-extension.qcow2', extensions + 4, u32(0xffff0000));
    expect(await refused('long-extension.qcow2')).toBe('qcow2 header extension is too large');
  });

  it('refuses other versions', async () => {
    await patched('v3.qcow2', 'v1.qcow2', 4, u32(1));
    expect(await refused('v1.qcow2')).toBe('qcow2 version 1 is not supported');
  });

  it('reads a 1 PiB qcow2, which checkImage refuses against a 1 GiB maximum', async () => {
    const inspected = await inspectImageFile(file('huge.qcow2'));
    expect(inspected).toEqual({ format: 'qcow2', virtualSize: 2 ** 50 });
    expect(await refusedSync(() => checkImage(inspected, { diskFormat: 'qcow2', maxVirtualSize: GiB }))).toBe(
      'virtual size of 1125899906842624 bytes exceeds the limit of 1073741824 bytes',
    );
  });

  it('refuses an absurd virtual size', async () => {
    await patched('v3.qcow2', 'absurd.qcow2', 24, Buffer.from([0x40, 0, 0, 0, 0, 0, 0, 0]));
    expect(await refused('absurd.qcow2')).toBe('qcow2 virtual size is absurd');
  });

  it('refuses a truncated header, and a head shorter than the file', async () => {
    const head = (await readFile(file('v3.qcow2'))).subarray(0, 50);
    expect(await refusedSync(() => inspectImage(head, head.length))).toBe('truncated qcow2 header');
    expect(await refusedSync(() => inspectImage(head.subarray(0, 8), 8))).toBe('truncated qcow2 header');
    expect(await refusedSync(() => inspectImage(head, 10 * MiB))).toBe(
      `only 50 of the image's first ${INSPECTION_BYTES} bytes were read`,
    );
  });

  it('finds a qcow2 labelled raw, which checkImage refuses', async () => {
    // A raw disk whose first sector is a qcow2 header is a qcow2 to anything that probes it.
    const header = (await readFile(file('v3.qcow2'))).subarray(0, 512);
    await writeFile(file('qcow2-in.raw'), Buffer.concat([header, Buffer.alloc(MiB - 512)]));
    const inspected = await inspectImageFile(file('qcow2-in.raw'));
    expect(inspected).toEqual({ format: 'qcow2', virtualSize: GiB });
    expect(await refusedSync(() => checkImage(inspected, { diskFormat: 'raw' }))).toBe('its content is qcow2, not raw');
  });
});

describe('vmdk', () => {
  it('reads monolithicSparse and streamOptimized images, which checkImage refuses', async () => {
    for (const name of ['sparse.vmdk', 'stream.vmdk']) {
      const inspected = await inspectImageFile(file(name));
      expect(inspected).toEqual({ format: 'vmdk', virtualSize: GiB });
      expect(await refusedSync(() => checkImage(inspected, { diskFormat: 'vmdk' }))).toBe(
        'vmdk images are not supported',
      );
      expect(await refusedSync(() => checkImage(inspected, { diskFormat: 'raw' }))).toBe(
        'its content is vmdk, not raw',
      );
    }
  });

  it('refuses a descriptor file whose FLAT extent is a host file, as QEMU would open it', async () => {
    const flat = descriptor('monolithicFlat', 'RW 1 FLAT "/etc/hostname" 0');
    await writeFile(file('flat.vmdk'), flat);
    expect((await qemuInfo('flat.vmdk')).format).toBe('vmdk');
    expect(await refused('flat.vmdk')).toBe('vmdk extent refers to another file');
    // QEMU probes a descriptor file by its version line alone.
    await writeFile(file('flat-version.vmdk'), flat.slice(flat.indexOf('version=')));
    expect(await refused('flat-version.vmdk')).toBe('vmdk extent refers to another file');
  });

  it('refuses a descriptor file even when its single extent is a sparse one', async () => {
    await writeFile(file('descriptor.vmdk'), descriptor('monolithicSparse', 'RW 2097152 SPARSE "sparse.vmdk"'));
    expect(await refused('descriptor.vmdk')).toBe('vmdk extent refers to another file');
  });

  it('accepts an embedded descriptor naming its own sparse extent', async () => {
    await sparseVmdkWith('resealed.vmdk', descriptor('monolithicSparse', 'RW 2097152 SPARSE "resealed.vmdk"'));
    expect(await inspectImageFile(file('resealed.vmdk'))).toEqual({ format: 'vmdk', virtualSize: GiB });
  });

  it('refuses an embedded descriptor with an extent in another file', async () => {
    await sparseVmdkWith('embedded-flat.vmdk', descriptor('monolithicSparse', 'RW 2097152 FLAT "/etc/hostname" 0'));
    expect(await refused('embedded-flat.vmdk')).toBe('vmdk extent refers to another file');
    await sparseVmdkWith('embedded-path.vmdk', descriptor('monolithicSparse', 'RW 2097152 SPARSE "/etc/hostname"'));
    expect(await refused('embedded-path.vmdk')).toBe('vmdk extent refers to another file');
    await sparseVmdkWith('embedded-relative.vmdk', descriptor('monolithicSparse', 'RW 2097152 FLAT "hostname" 0'));
    expect(await refused('embedded-relative.vmdk')).toBe('vmdk extent refers to another file');
  });

  it('refuses an embedded descriptor with more than one extent', async () => {
    const extents = ['RW 2097152 SPARSE "two.vmdk"', 'RW 2097152 SPARSE "two.vmdk"'];
    await sparseVmdkWith('two.vmdk', descriptor('monolithicSparse', ...extents));
    expect(await refused('two.vmdk')).toBe('vmdk image has 2 extents, not one');
  });

  it('refuses other create types', async () => {
    await sparseVmdkWith('flat-type.vmdk', descriptor('monolithicFlat', 'RW 2097152 SPARSE "flat-type.vmdk"'));
    expect(await refused('flat-type.vmdk')).toBe('vmdk createType monolithicFlat is not accepted');
  });

  it('refuses a descriptor line it does not understand', async () => {
    const text = descriptor('monolithicSparse', 'RW 2097152 SPARSE "odd.vmdk"', 'include /etc/hostname');
    await sparseVmdkWith('odd.vmdk', text);
    expect(await refused('odd.vmdk')).toBe('vmdk descriptor has an unexpected line');
  });

  it('refuses a descriptor that is not ASCII text, or not at sector 1', async () => {
    await sparseVmdkWith('binary.vmdk', descriptor('monolithicSparse', 'RW 2097152 SPARSE "binary.vmdk"', '\xff'));
    expect(await refused('binary.vmdk')).toBe('vmdk descriptor is not ASCII text');
    await patched('sparse.vmdk', 'moved.vmdk', 28, Buffer.from([2]));
    expect(await refused('moved.vmdk')).toBe('vmdk descriptor is not at sector 1');
  });

  it('reads an old COWD sparse disk as vmdk', () => {
    const header = Buffer.alloc(512);
    header.write('COWD', 0, 'latin1');
    header.writeUInt32LE(2048, 12);
    expect(inspectImage(header, header.length)).toEqual({ format: 'vmdk', virtualSize: MiB });
  });

  it('refuses a sparse header of no capacity, which makes QEMU follow the descriptor', async () => {
    await patched('sparse.vmdk', 'no-capacity.vmdk', 12, Buffer.alloc(8));
    expect(await refused('no-capacity.vmdk')).toBe('vmdk sparse header has no capacity');
  });
});

describe('other formats', () => {
  it.each([
    ['disk.vhd', 'vhd'],
    ['disk.vhdx', 'vhdx'],
    ['disk.vdi', 'vdi'],
    ['disk.qed', 'qed'],
    ['disk.luks', 'luks'],
  ])('reads %s as %s with the virtual size qemu-img reports, and checkImage refuses it', async (name, format) => {
    const inspected = await inspectImageFile(file(name));
    expect(inspected).toEqual({ format, virtualSize: (await qemuInfo(name))['virtual-size'] });
    expect(await refusedSync(() => checkImage(inspected, { diskFormat: format }))).toBe(
      `${format} images are not supported`,
    );
  });

  it('refuses a qed with a backing file or unknown features', async () => {
    expect(await refused('backing.qed')).toBe('qed image has a backing file');
    await patched('disk.qed', 'feature.qed', 16, Buffer.from([0x10]));
    expect(await refused('feature.qed')).toBe('qed image has unknown features');
  });

  it('refuses a differencing vhd, which names its parent', async () => {
    await patched('disk.vhd', 'differencing.vhd', 60, u32(4));
    expect(await refused('differencing.vhd')).toBe('vhd image is a differencing disk');
  });

  it('refuses luks versions QEMU cannot read', async () => {
    await patched('disk.luks', 'v2.luks', 6, Buffer.from([0, 2]));
    expect(await refused('v2.luks')).toBe('luks version 2 is not supported');
  });

  it('refuses a vhdx whose metadata lies past the inspected bytes', async () => {
    const vhdx = await readFile(file('disk.vhdx'));
    const region = vhdx.indexOf(Buffer.from('06a27c8b90479a4bb8fe575f050f886e', 'hex'), 192 * KiB);
    const offset = Buffer.alloc(8);
    offset.writeBigUInt64LE(BigInt(INSPECTION_BYTES + MiB));
    await patched('disk.vhdx', 'far.vhdx', region + 16, offset);
    expect(vhdx.length).toBeGreaterThan(INSPECTION_BYTES + MiB);
    expect(await refused('far.vhdx')).toBe(`vhdx header extends past the first ${INSPECTION_BYTES} bytes`);
  });

  it('reads an ISO and its volume size', async () => {
    await writeFile(file('disk.iso'), isoImage(40));
    expect(await inspectImageFile(file('disk.iso'))).toEqual({ format: 'iso', virtualSize: 40 * 2 * KiB });
  });

  it('refuses an image matching two formats', async () => {
    await patched('v3.qcow2', 'polyglot.qcow2', 32 * KiB, isoImage(17).subarray(32 * KiB));
    expect(await refused('polyglot.qcow2')).toBe('image matches several formats: qcow2, iso');
  });
});

describe('raw', () => {
  it('takes unrecognised bytes for raw, of the file size, and checkImage lets them through only as raw', async () => {
    const inspected = await inspectImageFile(file('disk.raw'));
    expect(inspected).toEqual({ format: 'raw', virtualSize: 8 * MiB });
    expect(checkImage(inspected, { diskFormat: 'raw', maxVirtualSize: 8 * MiB })).toBe(inspected);
    expect(await refusedSync(() => checkImage(inspected, { diskFormat: 'raw', maxVirtualSize: 8 * MiB - 1 }))).toBe(
      'virtual size of 8388608 bytes exceeds the limit of 8388607 bytes',
    );
    expect(await refusedSync(() => checkImage(inspected, { diskFormat: 'qcow2' }))).toBe(
      'its content is raw, not qcow2',
    );
    expect(await refusedSync(() => checkImage(inspected, { diskFormat: null }))).toBe(
      'image has no disk_format (its content is raw)',
    );
  });

  it('takes a disk with a partition table (protective MBR and GPT) for raw', async () => {
    const disk = Buffer.alloc(2 * MiB);
    disk.set([0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0xff, 0x0f, 0, 0], 446);
    disk.set([0x55, 0xaa], 510);
    disk.write('EFI PART', 512, 'latin1');
    await writeFile(file('gpt.raw'), disk);
    expect(await inspectImageFile(file('gpt.raw'))).toEqual({ format: 'raw', virtualSize: 2 * MiB });
  });

  it('takes files too short for any header for raw', () => {
    expect(inspectImage(Buffer.alloc(0), 0)).toEqual({ format: 'raw', virtualSize: 0 });
    expect(inspectImage(Buffer.from('QFI'), 3)).toEqual({ format: 'raw', virtualSize: 3 });
  });
});

describe('imageRefusal', () => {
  it('names the image, the format Glance records and the reason', () => {
    const error = new ImageFormatError('qcow2 image has a backing file');
    expect(imageRefusal('3f1c', 'qcow2', error)).toBe(
      'Image 3f1c is not a valid qcow2 image: qcow2 image has a backing file',
    );
    expect(imageRefusal('3f1c', null, error)).toBe('Image 3f1c is not a valid image: qcow2 image has a backing file');
  });
});
