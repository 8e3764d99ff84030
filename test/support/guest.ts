// The project's test guest (docs/guest.md) booted with QEMU directly, with its serial console and
// QMP on sockets. Its image and protocol are in lib/guest-protocol.ts.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { access, constants, copyFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { connectWithRetry, guestImage, LineChannel, readyLine } from '../../lib/guest-protocol.js';

const run = promisify(execFile);

/** A qcow2 overlay at `file` whose backing file is the guest image: the disk one guest writes. */
export async function createGuestDisk(file: string): Promise<void> {
  const image = await guestImage();
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', image, file]);
}

/** A minimal QMP client: the greeting, capabilities negotiation, then one command at a time. */
export class Qmp {
  private constructor(private readonly channel: LineChannel) {}

  static async connect(socketPath: string, timeoutMs = 10_000): Promise<Qmp> {
    const qmp = new Qmp(new LineChannel(await connectWithRetry({ path: socketPath }, timeoutMs)));
    await qmp.channel.waitFor(/"QMP"/, timeoutMs);
    await qmp.execute('qmp_capabilities');
    return qmp;
  }

  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    this.channel.send(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }));
    const match = await this.channel.waitFor(/^\{"(return|error)"/, 10_000);
    const answer = JSON.parse(match.input as string) as { return?: unknown; error?: { desc: string } };
    if (answer.error) throw new Error(`QMP ${command}: ${answer.error.desc}`);
    return answer.return;
  }

  close(): void {
    this.channel.close();
  }
}

export type Firmware = 'bios' | 'uefi';
export type Accelerator = 'kvm' | 'tcg';

const ovmfCode = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const ovmfVars = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/** A guest running under qemu-system-x86_64, with its serial console and QMP on unix sockets. */
export interface QemuGuest {
  process: ChildProcess;
  serial: LineChannel;
  qmp: Qmp;
  /** Resolves with QEMU's exit code (or signal) when the process ends. */
  exited: Promise<number | string>;
  /** Kills QEMU (a destroy) if it still runs, and closes the sockets. */
  kill(): Promise<void>;
}

export interface QemuGuestOptions {
  /** The qcow2 disk (an overlay of the guest image, see createGuestDisk). */
  disk: string;
  /** A folder of this guest's own for its sockets and UEFI variables. */
  dir: string;
  firmware: Firmware;
  accelerator: Accelerator;
  /**
   * `user` (the default): QEMU's user-mode network, whose DHCP gives 10.0.2.15; `unanswered`: a NIC
   * on a hub with nothing else on it, where no DHCP request gets an answer.
   */
  network?: 'user' | 'unanswered';
  /** QEMU user networking's host forwards: host port -> guest port. */
  hostForwards?: { hostPort: number; guestPort: number }[];
  /** Every serial console line, e.g. to a test's log. */
  onSerialLine?: (line: string) => void;
}

/**
 * Starts QEMU the way libvirt runs the project's domains (machine `pc`, a virtio disk and NIC), with
 * user-mode networking (the guest gets 10.0.2.15 by DHCP). QEMU waits for the serial console's
 * client before it starts the guest, so no line is lost.
 */
export async function startQemuGuest(options: QemuGuestOptions): Promise<QemuGuest> {
  const serialPath = path.join(options.dir, 'serial.sock');
  const qmpPath = path.join(options.dir, 'qmp.sock');
  const forwards = (options.hostForwards ?? []).map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`);
  const args = [
    '-machine',
    `pc,accel=${options.accelerator}`,
    '-m',
    '256',
    '-display',
    'none',
    '-no-user-config',
    '-nodefaults',
    '-vga',
    'std',
    '-chardev',
    `socket,id=serial0,path=${serialPath},server=on,wait=on`,
    '-serial',
    'chardev:serial0',
    '-chardev',
    `socket,id=qmp0,path=${qmpPath},server=on,wait=off`,
    '-mon',
    'chardev=qmp0,mode=control',
    '-drive',
    `file=${options.disk},format=qcow2,if=virtio`,
    '-netdev',
    options.network === 'unanswered' ? 'hubport,id=net0,hubid=0' : `user,id=net0${forwards.join('')}`,
    '-device',
    'virtio-net-pci,netdev=net0',
  ];
  if (options.firmware === 'uefi') {
    const vars = path.join(options.dir, 'OVMF_VARS.fd');
    await copyFile(ovmfVars, vars);
    args.push(
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${ovmfCode}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${vars}`,
    );
  }
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  qemu.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | string>((resolve) =>
    qemu.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  const failed = exited.then((code) => {
    throw new Error(`qemu-system-x86_64 exited (${code}) at start: ${stderr.trim()}`);
  });
  try {
    const serialSocket = await Promise.race([connectWithRetry({ path: serialPath }, 10_000), failed]);
    const serial = new LineChannel(serialSocket, options.onSerialLine);
    const qmp = await Promise.race([Qmp.connect(qmpPath), failed]);
    failed.catch(() => undefined);
    return {
      process: qemu,
      serial,
      qmp,
      exited,
      async kill() {
        qmp.close();
        serial.close();
        if (qemu.exitCode === null && qemu.signalCode === null) {
          qemu.kill('SIGKILL');
          await exited;
        }
      },
    };
  } catch (error) {
    qemu.kill('SIGKILL');
    failed.catch(() => undefined);
    throw error;
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

/** True when this process may open /dev/kvm. */
async function kvmAccessible(): Promise<boolean> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

let acceleratorChoice: Promise<Accelerator> | undefined;

/**
 * The accelerator that boots the guest here: GUEST_ACCEL (kvm or tcg) when set; else KVM when
 * /dev/kvm opens and a probe guest reaches its ready line under it within 20 s, otherwise TCG.
 * The probe is needed: some machines offer a /dev/kvm that runs a BIOS but not a kernel (the
 * kvm-pvm module of nested sandboxes hangs a guest kernel without a word; where that module is
 * loaded, TCG is chosen without a probe).
 */
export function guestAccelerator(dir: string): Promise<Accelerator> {
  acceleratorChoice ??= (async (): Promise<Accelerator> => {
    const forced = process.env.GUEST_ACCEL;
    if (forced === 'kvm' || forced === 'tcg') return forced;
    if (forced) throw new Error(`GUEST_ACCEL must be kvm or tcg, got '${forced}'`);
    if (!(await kvmAccessible())) return 'tcg';
    // kvm-pvm runs only guest kernels built for it: no need to wait out a probe.
    if (await exists('/sys/module/kvm_pvm')) return 'tcg';
    const disk = path.join(dir, 'kvm-probe.qcow2');
    await createGuestDisk(disk);
    const guest = await startQemuGuest({ disk, dir, firmware: 'bios', accelerator: 'kvm' });
    try {
      await Promise.race([
        guest.serial.waitFor(readyLine, 20_000),
        guest.exited.then((code) => {
          throw new Error(`QEMU exited (${code})`);
        }),
      ]);
      return 'kvm';
    } catch {
      return 'tcg';
    } finally {
      await guest.kill();
    }
  })();
  return acceleratorChoice;
}
