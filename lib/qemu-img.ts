// qemu-img, always through an argument list (never a shell string).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile: string | null;
}

async function qemuImg(args: string[]): Promise<string> {
  try {
    const { stdout } = await run('qemu-img', args, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`qemu-img ${args[0]} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}

/** Reads an image's metadata; `shared` allows reading a disk a running domain holds open. */
export async function imageInfo(file: string, { shared = false } = {}): Promise<ImageInfo> {
  const info = JSON.parse(await qemuImg(['info', '--output=json', ...(shared ? ['-U'] : []), file])) as {
    format: string;
    'virtual-size': number;
    'actual-size': number;
    'backing-filename'?: string;
  };
  return {
    format: info.format,
    virtualSize: info['virtual-size'],
    actualSize: info['actual-size'],
    backingFile: info['backing-filename'] ?? null,
  };
}

/** A qcow2 overlay on `backingFile`, at least `size` bytes of virtual size. */
export async function createOverlay(file: string, backingFile: string, backingFormat: string, size: number) {
  await qemuImg(['create', '-q', '-f', 'qcow2', '-b', backingFile, '-F', backingFormat, file, String(size)]);
}

/** An empty qcow2 of `size` bytes. */
export async function createBlank(file: string, size: number) {
  await qemuImg(['create', '-q', '-f', 'qcow2', file, String(size)]);
}

/** Copies `source` into a standalone image (backing chain flattened) of `format`. */
export async function convert(source: string, target: string, format: string) {
  await qemuImg(['convert', '-q', '-O', format, source, target]);
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
