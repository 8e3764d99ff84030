// qemu-img, always through an argument list (never a shell string). A run given an AbortSignal
// is killed when it fires, so a cancelled activity leaves no qemu-img behind. Every image is opened
// with its format named (-f, -F): a probed format lets an image's own bytes decide what qemu-img
// reads, and a VMDK descriptor or a qcow2 header can name any host file (lib/format-inspector.ts).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile: string | null;
  backingFormat: string | null;
  /** A qcow2's external data file: another file holding its guest data. */
  dataFile: string | null;
}

/** One image of a backing chain, the top one first. */
export interface ChainImage extends ImageInfo {
  file: string;
}

interface QemuImgInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size': number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific'?: { data?: { 'data-file'?: string } };
}

/** A qemu-img run that failed: what lib/compute-errors.ts sorts into retryable and not. */
export class QemuImgError extends Error {
  constructor(
    readonly subcommand: string,
    /** Its exit status; null when it was killed, or never ran. */
    readonly exitCode: number | null,
    /** Node's code when it could not run or was aborted (ENOENT, ABORT_ERR). */
    readonly systemError: string | null,
    readonly stderr: string,
    options: ErrorOptions,
  ) {
    super(`qemu-img ${subcommand} failed: ${stderr || (options.cause as Error).message}`, options);
    this.name = 'QemuImgError';
  }
}

async function qemuImg(args: string[], signal?: AbortSignal): Promise<string> {
  try {
    const { stdout } = await run('qemu-img', args, { maxBuffer: 16 * 1024 * 1024, signal });
    return stdout;
  } catch (error) {
    const { code, stderr } = error as { code?: number | string; stderr?: string };
    throw new QemuImgError(
      args[0]!,
      typeof code === 'number' ? code : null,
      typeof code === 'string' ? code : null,
      stderr?.trim() ?? '',
      { cause: error },
    );
  }
}

function imageInfoOf(info: QemuImgInfo): ImageInfo {
  return {
    format: info.format,
    virtualSize: info['virtual-size'],
    actualSize: info['actual-size'],
    backingFile: info['full-backing-filename'] ?? info['backing-filename'] ?? null,
    backingFormat: info['backing-filename-format'] ?? null,
    dataFile: info['format-specific']?.data?.['data-file'] ?? null,
  };
}

/**
 * Reads the header of an image of `format`; `shared` allows reading a disk a running domain holds
 * open. The backing file, if any, is named, never opened.
 */
export async function imageInfo(file: string, format: string, { shared = false } = {}): Promise<ImageInfo> {
  return imageInfoOf(
    JSON.parse(await qemuImg(['info', '--output=json', '-f', format, ...(shared ? ['-U'] : []), file])),
  );
}

/**
 * The image and every image under it, the image itself first. Only for a chain already checked to
 * be the project's own (an instance overlay on its _base file): the chain's formats come from its
 * headers.
 */
export async function backingChain(file: string, format: string): Promise<ChainImage[]> {
  const chain = JSON.parse(
    await qemuImg(['info', '--output=json', '--backing-chain', '-U', '-f', format, file]),
  ) as QemuImgInfo[];
  return chain.map((info) => ({ file: info.filename, ...imageInfoOf(info) }));
}

/** A qcow2 overlay on `backingFile`, at least `size` bytes of virtual size. */
export async function createOverlay(file: string, backingFile: string, backingFormat: string, size: number) {
  await qemuImg(['create', '-q', '-f', 'qcow2', '-b', backingFile, '-F', backingFormat, file, String(size)]);
}

/** An empty qcow2 of `size` bytes. */
export async function createBlank(file: string, size: number) {
  await qemuImg(['create', '-q', '-f', 'qcow2', file, String(size)]);
}

/**
 * Copies `source` (of `sourceFormat`) into a standalone image (backing chain flattened) of
 * `format`; with `zstd`, a qcow2 whose clusters are zstd-compressed. Out-of-order writes (-W) let
 * both cores work.
 */
export async function convert(
  source: string,
  sourceFormat: string,
  target: string,
  format: string,
  { zstd = false, signal }: { zstd?: boolean; signal?: AbortSignal } = {},
) {
  const compression = zstd ? ['-c', '-o', 'compression_type=zstd'] : [];
  await qemuImg(['convert', '-q', '-W', '-f', sourceFormat, '-O', format, ...compression, source, target], signal);
}

/** Grows the virtual size of an image of `format` to `size` bytes. */
export async function resize(file: string, format: string, size: number) {
  await qemuImg(['resize', '-q', '-f', format, file, String(size)]);
}

/** True when the raw file `reference` and the qcow2 `disk` show the guest the same bytes. */
export async function sameGuestContent(reference: string, disk: string): Promise<boolean> {
  try {
    await run('qemu-img', ['compare', '-q', '-U', '-f', 'raw', '-F', 'qcow2', reference, disk]);
    return true;
  } catch (error) {
    if ((error as { code?: number }).code === 1) return false;
    throw error;
  }
}
