// qemu-img, always through an argument list (never a shell string). A run given an AbortSignal
// is killed when it fires, so a cancelled activity leaves no qemu-img behind.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile: string | null;
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
}

async function qemuImg(args: string[], signal?: AbortSignal): Promise<string> {
  try {
    const { stdout } = await run('qemu-img', args, { maxBuffer: 16 * 1024 * 1024, signal });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`qemu-img ${args[0]} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}

function imageInfoOf(info: QemuImgInfo): ImageInfo {
  return {
    format: info.format,
    virtualSize: info['virtual-size'],
    actualSize: info['actual-size'],
    backingFile: info['full-backing-filename'] ?? info['backing-filename'] ?? null,
  };
}

/** Reads an image's metadata; `shared` allows reading a disk a running domain holds open. */
export async function imageInfo(file: string, { shared = false } = {}): Promise<ImageInfo> {
  return imageInfoOf(JSON.parse(await qemuImg(['info', '--output=json', ...(shared ? ['-U'] : []), file])));
}

/** The image and every image under it, the image itself first. */
export async function backingChain(file: string): Promise<ChainImage[]> {
  const chain = JSON.parse(await qemuImg(['info', '--output=json', '--backing-chain', '-U', file])) as QemuImgInfo[];
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
 * Copies `source` into a standalone image (backing chain flattened) of `format`; with `zstd`, a
 * qcow2 whose clusters are zstd-compressed. Out-of-order writes (-W) let both cores work.
 */
export async function convert(
  source: string,
  target: string,
  format: string,
  { zstd = false, signal }: { zstd?: boolean; signal?: AbortSignal } = {},
) {
  const compression = zstd ? ['-c', '-o', 'compression_type=zstd'] : [];
  await qemuImg(['convert', '-q', '-W', '-O', format, ...compression, source, target], signal);
}

/** Grows an image's virtual size to `size` bytes. */
export async function resize(file: string, size: number) {
  await qemuImg(['resize', '-q', file, String(size)]);
}

/** True when the two images show the guest the same bytes. */
export async function sameGuestContent(a: string, b: string): Promise<boolean> {
  try {
    await run('qemu-img', ['compare', '-q', '-U', a, b]);
    return true;
  } catch (error) {
    if ((error as { code?: number }).code === 1) return false;
    throw error;
  }
}
