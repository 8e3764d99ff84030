// The project's test guest (docs/guest.md) under QEMU alone, no stack: it boots under BIOS and
// UEFI, reports its DHCP address, writes a file through its own file system, powers off on the
// ACPI power button by itself, and reads the file back on its next boot.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Accelerator,
  createGuestDisk,
  type Firmware,
  guestAccelerator,
  type QemuGuest,
  startQemuGuest,
} from '../support/guest.js';
import {
  connectWithRetry,
  GuestProtocol,
  guestImage,
  guestProtocolPort,
  LineChannel,
  powerOffLine,
  readyLine,
} from '../../lib/guest-protocol.js';

let dir: string;
let accelerator: Accelerator;
const running: QemuGuest[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vm-shelve-guest-'));
  await guestImage();
  accelerator = await guestAccelerator(dir);
  console.log(`guest accelerator: ${accelerator}`);
}, 600_000);

afterAll(async () => {
  await Promise.all(running.map((guest) => guest.kill()));
  await rm(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Boots the disk and waits for the ready line; returns the guest, its address and the boot time. */
async function boot(firmware: Firmware, disk: string, name: string, network: 'user' | 'unanswered' = 'user') {
  const guestDir = await mkdtemp(path.join(dir, `${name}-`));
  const tcpPort = await freePort();
  const started = Date.now();
  const guest = await startQemuGuest({
    disk,
    dir: guestDir,
    firmware,
    accelerator,
    network,
    hostForwards: [{ hostPort: tcpPort, guestPort: guestProtocolPort }],
  });
  running.push(guest);
  // TCG boots take longer than KVM ones, UEFI's firmware more than SeaBIOS.
  const ready = await guest.serial.waitFor(readyLine, accelerator === 'kvm' ? 60_000 : 150_000);
  const bootMs = Date.now() - started;
  return { guest, address: ready[1] as string, bootMs, tcpPort };
}

/** Presses the ACPI power button and waits for QEMU to end on its own; returns how long it took. */
async function powerDown(guest: QemuGuest): Promise<number> {
  const pressed = Date.now();
  await guest.qmp.execute('system_powerdown');
  await guest.serial.waitFor(powerOffLine, 30_000);
  const code = await Promise.race([
    guest.exited,
    new Promise((resolve) => setTimeout(() => resolve('still running after 60 s'), 60_000)),
  ]);
  expect(code).toBe(0);
  return Date.now() - pressed;
}

describe('the guest image', () => {
  it('keeps a write it answered ok through a destroy (QEMU killed)', async () => {
    const disk = path.join(dir, 'destroyed.qcow2');
    await createGuestDisk(disk);
    const content = randomBytes(1000);

    const first = await boot('bios', disk, 'destroyed-1');
    const serial = new GuestProtocol(first.guest.serial);
    await serial.write('acknowledged', content);
    expect(await serial.write('bad/name', content).catch((error: Error) => error.message)).toMatch(/bad name/);
    await first.guest.kill();

    const second = await boot('bios', disk, 'destroyed-2');
    expect(await new GuestProtocol(second.guest.serial).read('acknowledged')).toEqual(content);
    await powerDown(second.guest);
  }, 600_000);
});

describe('the guest image without a DHCP answer', () => {
  it('is ready after a short wait, with no address', async () => {
    const disk = path.join(dir, 'no-dhcp.qcow2');
    await createGuestDisk(disk);
    const { guest, address, bootMs } = await boot('bios', disk, 'no-dhcp', 'unanswered');
    expect(address).toBe('none');
    expect(await new GuestProtocol(guest.serial).ping()).toBe('none');
    console.log(`bios (${accelerator}) with no DHCP answer: boot to ready ${bootMs} ms`);
    await powerDown(guest);
  }, 600_000);
});

describe.each<Firmware>(['bios', 'uefi'])('the guest image under %s', (firmware) => {
  it('boots with its DHCP address, keeps a file written over the serial console through a clean power-off, and reads it back on the next boot', async () => {
    const disk = path.join(dir, `${firmware}.qcow2`);
    await createGuestDisk(disk);
    const content = randomBytes(3000);
    const sha256 = createHash('sha256').update(content).digest('hex');

    const first = await boot(firmware, disk, `${firmware}-1`);
    expect(first.address).toBe('10.0.2.15');
    const serial = new GuestProtocol(first.guest.serial);
    expect(await serial.ping()).toBe('10.0.2.15');
    expect(await serial.read('kept.bin')).toBeNull();
    expect(await serial.write('kept.bin', content)).toBe(sha256);
    expect(await serial.read('kept.bin')).toEqual(content);
    const shutdownMs = await powerDown(first.guest);

    const second = await boot(firmware, disk, `${firmware}-2`);
    const tcp = new LineChannel(await connectWithRetry({ host: '127.0.0.1', port: second.tcpPort }, 10_000));
    try {
      const overTcp = new GuestProtocol(tcp);
      expect(await overTcp.ping()).toBe('10.0.2.15');
      expect(await overTcp.read('kept.bin')).toEqual(content);
      expect(await overTcp.write('empty', Buffer.alloc(0))).toBe(createHash('sha256').digest('hex'));
      expect(await overTcp.read('empty')).toEqual(Buffer.alloc(0));
    } finally {
      tcp.close();
    }
    expect(await new GuestProtocol(second.guest.serial).read('kept.bin')).toEqual(content);
    const secondShutdownMs = await powerDown(second.guest);

    console.log(
      `${firmware} (${accelerator}): boot to ready ${first.bootMs} ms, again ${second.bootMs} ms; ` +
        `clean shutdown (system_powerdown to QEMU's exit) ${shutdownMs} ms, again ${secondShutdownMs} ms`,
    );
  }, 600_000);
});
