// Disk image format inspection without qemu-img, after Nova's and Glance's format_inspector
// (OSSA-2024-001, CVE-2024-32498). A tenant's image is untrusted: a qcow2 header or a VMDK
// descriptor can make QEMU open host files (backing file, external data file, extents), and an
// image labelled raw may be a qcow2 that a probing QEMU would follow. So the image's own bytes are
// read here, by code that follows no reference, before QEMU or qemu-img is allowed near it.
import { open } from 'node:fs/promises';

/** Formats the project boots and stores (Glance disk_format values). */
export const SUPPORTED_DISK_FORMATS = ['qcow2', 'raw'] as const;
export type SupportedDiskFormat = (typeof SUPPORTED_DISK_FORMATS)[number];

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * How many leading bytes inspectImage needs (the API fetches this much with an HTTP Range request).
 * 4 MiB: a qcow2's header extensions may fill its first cluster (up to 2 MiB), and VHDX keeps its
 * metadata at 2 or 3 MiB.
 */
export const INSPECTION_BYTES = 4 * MiB;

export interface InspectedImage {
  /** Detected: 'raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'qed', 'luks' or 'iso'. */
  format: string;
  virtualSize: number;
}

/** Thrown with a reason a person can read, e.g. "qcow2 image has a backing file". */
export class ImageFormatError extends Error {
  override readonly name = 'ImageFormatError';
}

/** What a person is told of a refused image: "Image <id> is not a valid <format> image: <reason>". */
export function imageRefusal(imageId: string, diskFormat: string | null, error: ImageFormatError): string {
  return `Image ${imageId} is not a valid ${diskFormat ? `${diskFormat} ` : ''}image: ${error.message}`;
}

function fail(reason: string): never {
  throw new ImageFormatError(reason);
}

/** Throws what a Buffer read past the end of `head` would: inspectImage reports both alike. */
function within(head: Buffer, end: number) {
  if (end > head.length) throw new RangeError(`offset ${end} is past the inspected bytes`);
}

// qcow2 (docs/interop/qcow2.txt in QEMU): a big-endian header, then extensions up to the end of
// the first cluster.
const QCOW2_DATA_FILE_FEATURE = 1n << 2n;
// dirty, corrupt, external data file, compression type, extended L2 entries
const QCOW2_KNOWN_FEATURES = 0x1fn;
const QCOW2_DATA_FILE_EXTENSION = 0x44415441;

function qcow2(head: Buffer): bigint {
  const version = head.readUInt32BE(4);
  if (version !== 2 && version !== 3) fail(`qcow2 version ${version} is not supported`);
  const clusterBits = head.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) fail('qcow2 cluster size is invalid');
  const virtualSize = head.readBigUInt64BE(24);
  if (head.readBigUInt64BE(8) !== 0n) fail('qcow2 image has a backing file');
  if (head.readUInt32BE(32) !== 0) fail('qcow2 image is encrypted');
  let offset = 72;
  if (version === 3) {
    const incompatible = head.readBigUInt64BE(72);
    if (incompatible & QCOW2_DATA_FILE_FEATURE) fail('qcow2 image has an external data file');
    if (incompatible & ~QCOW2_KNOWN_FEATURES) fail('qcow2 image has unknown incompatible features');
    offset = head.readUInt32BE(100);
    if (offset < 104) fail('qcow2 header length is invalid');
  }
  // Walk the extensions as QEMU does: the data file is named in one even without its feature bit.
  const end = 2 ** clusterBits;
  while (offset < end) {
    const type = head.readUInt32BE(offset);
    const length = head.readUInt32BE(offset + 4);
    offset += 8;
    if (offset > end || length > end - offset) fail('qcow2 header extension is too large');
    if (type === 0) break;
    if (type === QCOW2_DATA_FILE_EXTENSION) fail('qcow2 image has an external data file');
    offset += Math.ceil(length / 8) * 8;
  }
  return virtualSize;
}

// VMDK: a sparse extent ("KDMV") embeds a text descriptor at sector 1; a descriptor file is that
// text alone, and its extents are other files, which is how a VMDK reads the host's files.
const VMDK_DESCRIPTOR_MAX = MiB - 1; // QEMU reads no more of a descriptor
const VMDK_CREATE_TYPES = ['monolithicsparse', 'streamoptimized'];
// What QEMU's probe takes for a descriptor file, plus the header VMware writes.
const VMDK_DESCRIPTOR_FILE = /^(?:# Disk DescriptorFile|(?:#[^\n]*\n| *\r?\n)*version=[123]\r?\n)/;
const VMDK_EXTENT = /^(?:rw|rdonly|noaccess)\s+\d+\s+(\w+)(?:\s+"([^"]*)")?(?:\s+\d+)?$/i;

function sparseVmdk(head: Buffer): bigint {
  const version = head.readUInt32LE(4);
  if (version < 1 || version > 3) fail(`vmdk version ${version} is not supported`);
  const capacity = head.readBigUInt64LE(12);
  // With no capacity QEMU opens the extents the embedded descriptor names instead.
  if (capacity === 0n) fail('vmdk sparse header has no capacity');
  if (head.readBigUInt64LE(28) !== 1n) fail('vmdk descriptor is not at sector 1');
  const end = 512 + Math.min(Number(head.readBigUInt64LE(36)) * 512, VMDK_DESCRIPTOR_MAX);
  within(head, end);
  return vmdkDescriptor(head.subarray(512, end), capacity * 512n);
}

/** Checks a descriptor as Nova does, every line understood; `embeddedSize` is null for a descriptor file. */
function vmdkDescriptor(bytes: Buffer, embeddedSize: bigint | null): bigint {
  const nul = bytes.indexOf(0);
  const text = bytes.toString('latin1', 0, nul < 0 ? bytes.length : nul);
  if (!/^[\t\n\r\x20-\x7e]*$/.test(text)) fail('vmdk descriptor is not ASCII text');
  let createType = '';
  const extents: RegExpExecArray[] = [];
  for (const line of text.split('\n').map((raw) => raw.trim())) {
    if (!line || line.startsWith('#') || /^ddb/i.test(line)) continue;
    const extent = VMDK_EXTENT.exec(line);
    const field = /^([^ =]+)=(.*)$/.exec(line);
    if (extent) extents.push(extent);
    else if (!field) fail('vmdk descriptor has an unexpected line');
    else if (field[1]?.toLowerCase() === 'createtype') createType = (field[2] ?? '').replaceAll('"', '');
  }
  const [extent, ...more] = extents;
  if (!extent || more.length > 0) fail(`vmdk image has ${extents.length} extents, not one`);
  // Only the sparse extent embedded in this very file is acceptable: QEMU then opens no other file.
  const [, type = '', name = ''] = extent;
  if (embeddedSize === null || type.toLowerCase() !== 'sparse' || !name || name.includes('/')) {
    fail('vmdk extent refers to another file');
  }
  if (!VMDK_CREATE_TYPES.includes(createType.toLowerCase())) {
    fail(`vmdk createType ${/^\w{1,32}$/.test(createType) ? createType : '(invalid)'} is not accepted`);
  }
  return embeddedSize;
}

function qed(head: Buffer): bigint {
  const features = head.readBigUInt64LE(16);
  if (features & 1n) fail('qed image has a backing file');
  // backing file, needs check, backing format not probed
  if (features & ~7n) fail('qed image has unknown features');
  return head.readBigUInt64LE(48);
}

function vhd(head: Buffer): bigint {
  // A differencing disk names its parent's file.
  if (head.readUInt32BE(60) === 4) fail('vhd image is a differencing disk');
  return head.readBigUInt64BE(48);
}

// VHDX: the region table (at 192 KiB) points at the metadata region, whose table points at the
// virtual disk size. GUIDs are as they lie on disk (little-endian fields).
const VHDX_METADATA_REGION = Buffer.from('06a27c8b90479a4bb8fe575f050f886e', 'hex');
const VHDX_VIRTUAL_DISK_SIZE = Buffer.from('2442a52f1bcd7648b2115dbed83bf4b8', 'hex');

function vhdx(head: Buffer): bigint {
  const regions = 192 * KiB;
  if (head.readUInt32LE(regions) !== 0x69676572) fail('vhdx region table is missing');
  const entry = vhdxEntry(head, regions + 16, head.readUInt32LE(regions + 8), VHDX_METADATA_REGION);
  if (entry === null) fail('vhdx metadata region is missing');
  const metadata = Number(head.readBigUInt64LE(entry));
  within(head, metadata + 32);
  if (head.toString('latin1', metadata, metadata + 8) !== 'metadata') fail('vhdx metadata table is missing');
  const item = vhdxEntry(head, metadata + 32, head.readUInt16LE(metadata + 10), VHDX_VIRTUAL_DISK_SIZE);
  if (item === null) fail('vhdx virtual size is missing');
  return head.readBigUInt64LE(metadata + head.readUInt32LE(item));
}

/** The offset just past the GUID of the 32-byte table entry `id`, or null. */
function vhdxEntry(head: Buffer, first: number, count: number, id: Buffer): number | null {
  if (count > 2047) fail('vhdx table has too many entries');
  within(head, first + 32 * count);
  for (let entry = first; entry < first + 32 * count; entry += 32) {
    if (head.subarray(entry, entry + 16).equals(id)) return entry + 16;
  }
  return null;
}

function luks(head: Buffer, size: number): bigint {
  const version = head.readUInt16BE(6);
  // QEMU's LUKS driver reads version 1 only.
  if (version !== 1) fail(`luks version ${version} is not supported`);
  const payload = BigInt(head.readUInt32BE(104)) * 512n;
  if (payload > BigInt(size)) fail('luks payload lies past the end of the image');
  return BigInt(size) - payload;
}

const ISO_DESCRIPTOR = 32 * KiB; // after the 16 sectors of system area

function iso(head: Buffer, size: number): bigint {
  // Only a primary volume descriptor says how big the volume is.
  if (head[ISO_DESCRIPTOR] !== 1) return BigInt(size);
  return BigInt(head.readUInt32LE(ISO_DESCRIPTOR + 80)) * BigInt(head.readUInt16LE(ISO_DESCRIPTOR + 128));
}

interface Detector {
  format: string;
  /** Whether the magic is there; true only if `head` holds all of it. */
  matches(head: Buffer): boolean;
  /** The virtual size; throws ImageFormatError if the image is unsafe. */
  inspect(head: Buffer, size: number): bigint;
}

function magic(offset: number, ...signatures: string[]) {
  const buffers = signatures.map((signature) => Buffer.from(signature, 'latin1'));
  return (head: Buffer) => buffers.some((bytes) => head.subarray(offset, offset + bytes.length).equals(bytes));
}

const DETECTORS: Detector[] = [
  { format: 'qcow2', matches: magic(0, 'QFI\xfb'), inspect: qcow2 },
  { format: 'vmdk', matches: magic(0, 'KDMV'), inspect: sparseVmdk },
  // VMware 3 sparse disks, which QEMU still opens
  { format: 'vmdk', matches: magic(0, 'COWD'), inspect: (head) => BigInt(head.readUInt32LE(12)) * 512n },
  {
    format: 'vmdk',
    matches: (head) => VMDK_DESCRIPTOR_FILE.test(head.toString('latin1', 0, 2048)),
    inspect: (head) => vmdkDescriptor(head.subarray(0, VMDK_DESCRIPTOR_MAX), null),
  },
  { format: 'qed', matches: magic(0, 'QED\0'), inspect: qed },
  { format: 'vhd', matches: magic(0, 'conectix'), inspect: vhd },
  { format: 'vhdx', matches: magic(0, 'vhdxfile'), inspect: vhdx },
  { format: 'vdi', matches: magic(0x40, '\x7f\x10\xda\xbe'), inspect: (head) => head.readBigUInt64LE(0x170) },
  { format: 'luks', matches: magic(0, 'LUKS\xba\xbe'), inspect: luks },
  { format: 'iso', matches: magic(ISO_DESCRIPTOR + 1, 'CD001', 'NSR02', 'NSR03'), inspect: iso },
];

/**
 * Detects the format of an image from its first bytes (`head`, at most INSPECTION_BYTES) and its
 * total size in bytes; throws ImageFormatError for any unsafe image (whatever its format).
 */
export function inspectImage(head: Buffer, size: number): InspectedImage {
  // With fewer bytes, a format whose magic or header lies further in could not be ruled out.
  const needed = Math.min(size, INSPECTION_BYTES);
  if (head.length < needed) fail(`only ${head.length} of the image's first ${needed} bytes were read`);
  const detected = DETECTORS.filter((detector) => detector.matches(head));
  // One header hidden in another is a trick, never an image.
  if (detected.length > 1) fail(`image matches several formats: ${detected.map(({ format }) => format).join(', ')}`);
  const [detector] = detected;
  if (!detector) return { format: 'raw', virtualSize: size };
  try {
    const virtualSize = detector.inspect(head, size);
    if (virtualSize > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${detector.format} virtual size is absurd`);
    return { format: detector.format, virtualSize: Number(virtualSize) };
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    fail(
      head.length < size
        ? `${detector.format} header extends past the first ${head.length} bytes`
        : `truncated ${detector.format} header`,
    );
  }
}

/** Reads the first INSPECTION_BYTES of a file and inspects it. */
export async function inspectImageFile(file: string): Promise<InspectedImage> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const head = Buffer.alloc(Math.min(size, INSPECTION_BYTES));
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    return inspectImage(head.subarray(0, bytesRead), size);
  } finally {
    await handle.close();
  }
}

/**
 * The checks before the project lets QEMU or qemu-img open an image: the detected format must equal
 * Glance's disk_format, the format must be supported, the virtual size must not exceed maxVirtualSize
 * (when given). Throws ImageFormatError with the reason. Returns the inspection.
 */
export function checkImage(
  inspected: InspectedImage,
  expected: { diskFormat: string | null; maxVirtualSize?: number },
): InspectedImage {
  const { format, virtualSize } = inspected;
  const { diskFormat, maxVirtualSize } = expected;
  if (diskFormat === null) fail(`image has no disk_format (its content is ${format})`);
  if (format !== diskFormat) fail(`its content is ${format}, not ${diskFormat}`);
  if (!(SUPPORTED_DISK_FORMATS as readonly string[]).includes(format)) fail(`${format} images are not supported`);
  if (maxVirtualSize !== undefined && virtualSize > maxVirtualSize) {
    fail(`virtual size of ${virtualSize} bytes exceeds the limit of ${maxVirtualSize} bytes`);
  }
  return inspected;
}
