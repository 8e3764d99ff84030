// The guest part: the project's test guest (docs/guest.md) shelved and unshelved on the KVM host,
// with a real clean shutdown (the guest powers itself off on the ACPI power button) and a real
// boot, timed until the guest answers at its fixed IP again.
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DomainState } from '@unraid/libvirt';
import { connectGuest, guestImage } from '../lib/guest-protocol.js';
import { domainStateReason } from '../lib/libvirt.js';
import { VmState } from '../lib/nova.js';
import { uploadBootImage } from '../lib/sample-disk.js';
import type { RunContext } from './context.js';
import type { Figure } from './stats.js';
import { BENCH_OWNER, type Bench, benchFlavor, buildInstance, imageName, timedAction, unshelve } from './vm-shelve.js';

/** How often libvirt is asked whether the guest is off yet. */
const POLL_MS = 50;
/** A boot under TCG takes about 5 s; far more means the guest is not coming. */
const ANSWER_TIMEOUT_MS = 120_000;

/** Waits until the guest answers the protocol at `ip` (TCP port 7) and says that `ip` is its own. */
async function waitForGuest(ip: string): Promise<void> {
  const guest = await connectGuest(ip, ANSWER_TIMEOUT_MS);
  try {
    const own = await guest.ping();
    if (own !== ip) throw new Error(`the guest at ${ip} says its address is ${own}`);
  } finally {
    guest.close();
  }
}

/**
 * Seconds from `requested` until libvirt shows the instance's domain shut off, checked every
 * POLL_MS while `shelving` runs; then makes sure the guest powered itself off (a domain destroyed
 * after the shutdown timeout would make the figure a lie).
 */
async function untilGuestOff(
  bench: Bench,
  uuid: string,
  requested: number,
  shelving: Promise<unknown>,
): Promise<number> {
  const domain = await bench.libvirt.lookupInstance(uuid);
  if (!domain) throw new Error(`instance ${uuid} has no domain to shut down`);
  let ended = false;
  void shelving.finally(() => (ended = true)).catch(() => undefined);
  for (;;) {
    const state = await domain.getInfo().then(
      (info) => info.state,
      () => null,
    );
    if (state === DomainState.SHUTOFF) break;
    // The offload undefines the domain: it must have been seen off before.
    if (state === null || ended) throw new Error(`the shelve of ${uuid} ended before its domain was seen shut off`);
    await sleep(POLL_MS);
  }
  const seconds = (performance.now() - requested) / 1000;
  // The snapshot's upload still runs, so the domain is still there to ask.
  const state = await domainStateReason(bench.libvirt.uri, uuid);
  if (state !== 'shut off (shutdown)') {
    throw new Error(
      `the guest of ${uuid} did not power itself off: libvirt says '${state}' after ${seconds.toFixed(1)} s, so there is no clean shutdown to time`,
    );
  }
  return seconds;
}

export async function benchGuest(ctx: RunContext): Promise<Figure[]> {
  const { bench, kvm, print } = ctx;
  const imageId = randomUUID();
  bench.leftovers.image(imageId);
  await uploadBootImage(bench.glance, BENCH_OWNER, await guestImage(), { id: imageId, name: imageName.boot('guest') });
  const built = await buildInstance(bench, {
    host: kvm.host,
    imageRef: imageId,
    flavor: benchFlavor('guest', 1, 256),
    name: 'guest',
  });
  const uuid = built.instance.uuid;
  const ip = built.instance.ports[0]?.fixedIp?.address;
  if (!ip) throw new Error(`instance ${uuid} has no fixed IP`);
  const booted = performance.now();
  await waitForGuest(ip);
  print(
    `guest ${ip}: built in ${built.seconds.toFixed(1)} s, answering ${((performance.now() - booted) / 1000).toFixed(1)} s later`,
  );

  const samples: Record<'shutdown' | 'shelve' | 'active' | 'answering' | 'boot', number[]> = {
    shutdown: [],
    shelve: [],
    active: [],
    answering: [],
    boot: [],
  };
  for (let run = 1; run <= ctx.runs; run++) {
    // The default shutdown timeout: the guest is asked to power off and does. `requested` is the
    // moment timedAction starts its clock.
    const requested = performance.now();
    const shelving = timedAction(bench, 'shelve', { instanceUuid: uuid, shelvedOffloadTime: 0 });
    const [shutdown, shelved] = await Promise.all([untilGuestOff(bench, uuid, requested, shelving), shelving]);
    if (shelved.instance.vmState !== VmState.SHELVED_OFFLOADED) {
      throw new Error(`shelve left ${uuid} ${shelved.instance.vmState}`);
    }

    const unshelved = await unshelve(bench, uuid, kvm.host);
    const active = performance.now();
    if (unshelved.instance.vmState !== VmState.ACTIVE) {
      throw new Error(`unshelve left ${uuid} ${unshelved.instance.vmState}`);
    }
    const address = unshelved.instance.ports[0]?.fixedIp?.address;
    if (address !== ip) throw new Error(`instance ${uuid} came back with address ${address}, not ${ip}`);
    await waitForGuest(ip);
    const boot = (performance.now() - active) / 1000;

    samples.shutdown.push(shutdown);
    samples.shelve.push(shelved.seconds);
    samples.active.push(unshelved.seconds);
    samples.answering.push(unshelved.seconds + boot);
    samples.boot.push(boot);
    print(
      `guest run ${run}/${ctx.runs}: off ${shutdown.toFixed(2)} s, SHELVED_OFFLOADED ${shelved.seconds.toFixed(2)} s; ` +
        `unshelve ACTIVE ${unshelved.seconds.toFixed(2)} s, answering ${(unshelved.seconds + boot).toFixed(2)} s`,
    );
  }

  // As a user would: the delete takes the domain, its files and its DHCP entry from the host.
  await timedAction(bench, 'delete', { instanceUuid: uuid });
  await bench.leftovers.removeImage(imageId);
  await rm(path.join(kvm.instancesPath, '_base', imageId), { force: true });

  const figure = (name: string, values: number[]): Figure => ({ section: 'guest', name, unit: 's', samples: values });
  return [
    figure('clean shutdown: shelve request → guest off', samples.shutdown),
    figure('shelve: request → SHELVED_OFFLOADED', samples.shelve),
    figure('unshelve: request → ACTIVE', samples.active),
    figure('unshelve: request → guest answering at its IP', samples.answering),
    figure('guest boot: ACTIVE → answering', samples.boot),
  ];
}
