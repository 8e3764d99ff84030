// Which failures of libvirt and qemu-img a retry can fix: libvirt's messages as libvirt 9.0 and
// QEMU wrote them on this stack (tried by hand with virsh), and qemu-img's own failures, run for real.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LibvirtError } from '@unraid/libvirt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classifyHostError, LibvirtErrorCode, libvirtErrorCode } from '../../lib/compute-errors.js';
import { createBlank, imageInfo, resize } from '../../lib/qemu-img.js';

/** A LibvirtError as @unraid/libvirt makes one: the message only, every number -1. */
const libvirtError = (message: string) => new LibvirtError(message, -1, -1, -1);

describe('libvirtErrorCode', () => {
  it.each([
    ['Domain not found: no domain with matching uuid 6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b', LibvirtErrorCode.NO_DOMAIN],
    [
      'unsupported configuration: Maximum CPUs greater than specified machine type limit 255',
      LibvirtErrorCode.CONFIG_UNSUPPORTED,
    ],
    ['internal error: qemu unexpectedly closed the monitor: …', LibvirtErrorCode.INTERNAL_ERROR],
    ['Requested operation is not valid: domain is not running', LibvirtErrorCode.OPERATION_INVALID],
    [
      'Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainCreate)',
      LibvirtErrorCode.OPERATION_TIMEOUT,
    ],
    ['Cannot recv data: Connection reset by peer', LibvirtErrorCode.UNKNOWN],
  ])('reads the code of %j from its prefix', (message, code) => {
    expect(libvirtErrorCode(libvirtError(message))).toBe(code);
  });

  it('takes a code the binding does carry', () => {
    expect(libvirtErrorCode(new LibvirtError('whatever', LibvirtErrorCode.RESOURCE_BUSY, 10, 2))).toBe(
      LibvirtErrorCode.RESOURCE_BUSY,
    );
  });
});

describe('classifyHostError: libvirt', () => {
  it.each([
    // A domain QEMU cannot start, and a definition libvirt refuses: the same next time.
    [
      "internal error: qemu unexpectedly closed the monitor: 2026-11-27T10:57:39.564854Z qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
    ],
    ['unsupported configuration: Maximum CPUs greater than specified machine type limit 255'],
    ["XML error: Invalid value for attribute 'unit' in element 'memory'"],
    ["operation failed: domain 'instance-x' already exists with uuid 6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b"],
  ])('a refusal is not retried: %s', (message) => {
    expect(classifyHostError(libvirtError(message))).toEqual({
      type: 'HypervisorRefused',
      retryable: false,
      reason: message,
    });
  });

  it.each([
    // libvirtd restarting or gone: the worker reconnects on the next attempt.
    ["Failed to connect socket to '/var/run/libvirt/libvirt-sock': Connection refused"],
    ['Cannot write data: Broken pipe'],
    ['internal error: client socket is closed'],
    ['internal error: connection closed due to keepalive timeout'],
    ['End of file while reading data: Input/output error'],
    // Another job holds the domain for a moment.
    ['Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatchDomainCreate)'],
    ['Requested operation is not valid: domain is not running'],
    ['a message libvirt never wrote'],
  ])('a transient failure is retried: %s', (message) => {
    expect(classifyHostError(libvirtError(message))).toEqual({
      type: 'HypervisorUnavailable',
      retryable: true,
      reason: message,
    });
  });
});

describe('classifyHostError: qemu-img, run for real', () => {
  let dir: string;
  let holder: ChildProcess | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'compute-errors-'));
  });

  afterAll(async () => {
    holder?.kill();
    await rm(dir, { recursive: true, force: true });
  });

  const failureOf = (work: Promise<unknown>) =>
    work.then(
      () => {
        throw new Error('qemu-img succeeded');
      },
      (error: unknown) => error,
    );

  it('a missing disk is not retried', async () => {
    const failure = await failureOf(imageInfo(path.join(dir, 'missing'), 'qcow2'));
    expect(classifyHostError(failure)).toMatchObject({ type: 'DiskToolFailed', retryable: false });
    expect(classifyHostError(failure)?.reason).toMatch(/Could not open .*No such file or directory/);
  });

  it('a disk of another format is not retried', async () => {
    const raw = path.join(dir, 'raw');
    await writeFile(raw, Buffer.alloc(65536));
    const failure = await failureOf(imageInfo(raw, 'qcow2'));
    expect(classifyHostError(failure)).toMatchObject({ type: 'DiskToolFailed', retryable: false });
    expect(classifyHostError(failure)?.reason).toContain('Image is not in qcow2 format');
  });

  it('a disk another process holds open is retried', async () => {
    const disk = path.join(dir, 'held.qcow2');
    await createBlank(disk, 1024 * 1024);
    // qemu-io opens the image (taking its write lock) before it prompts for a command.
    holder = spawn('qemu-io', ['-f', 'qcow2', disk], { stdio: ['pipe', 'pipe', 'inherit'] });
    for (let output = ''; !output.includes('qemu-io>');) output += String((await once(holder.stdout!, 'data'))[0]);
    const failure = await failureOf(resize(disk, 'qcow2', 2 * 1024 * 1024));
    expect(classifyHostError(failure)).toMatchObject({ type: 'DiskLocked', retryable: true });
    expect(classifyHostError(failure)?.reason).toContain('Failed to get "write" lock');
  });

  it('a full disk is not retried, whichever tool found it', () => {
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    expect(classifyHostError(full)).toMatchObject({ type: 'HostDiskFull', retryable: false });
  });

  it('leaves any other failure as it is', () => {
    expect(classifyHostError(new Error('socket hang up'))).toBeNull();
    expect(classifyHostError('not an error')).toBeNull();
  });
});
