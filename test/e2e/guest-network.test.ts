// The test guest (docs/guest.md) on its project's network, through the real workflows: it takes
// its port's fixed IP by DHCP and answers there, it cannot reach another project's guest nor the
// host's services, and it keeps its IP through shelve-offload and unshelve.
import { randomUUID } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { startAction } from '../../lib/actions.js';
import { getInstance } from '../../lib/db/instances.js';
import { bridgeName, libvirtNetworkName, virsh } from '../../lib/libvirt.js';
import type { Instance, Port } from '../../lib/nova.js';
import { uploadBootImage } from '../../lib/sample-disk.js';
import { connectGuest, type GuestProtocol, guestImage, guestProtocolPort } from '../../lib/guest-protocol.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/** Two projects, each with a server of the test guest. */
const owners = [
  { projectId: 'e2e-net-a', userId: 'e2e-net-user' },
  { projectId: 'e2e-net-b', userId: 'e2e-net-user' },
];

interface Server {
  uuid: string;
  imageId: string;
  owner: (typeof owners)[number];
}

describe("guests on their projects' networks", () => {
  let stack: TestStack;
  let api: FastifyInstance;
  const servers: Server[] = [];
  /** Servers a step makes and deletes itself: deleted here should the step fail halfway. */
  const extraServers: string[] = [];
  const guests: GuestProtocol[] = [];

  async function run(action: 'build' | 'shelve' | 'unshelve' | 'delete', input: object): Promise<Instance> {
    const handle = await startAction(stack.client, stack.config, action, input as never);
    return (await handle.result()) as Instance;
  }

  async function portOf(server: Server): Promise<Port & { fixedIp: NonNullable<Port['fixedIp']> }> {
    const [port] = (await getInstance(stack.pool, server.uuid)).ports;
    expect(port?.fixedIp).not.toBeNull();
    return port as Port & { fixedIp: NonNullable<Port['fixedIp']> };
  }

  /** The guest's protocol over TCP at its address, once it answers there (a TCG boot takes seconds). */
  async function answerAt(ip: string): Promise<GuestProtocol> {
    const guest = await connectGuest(ip, 90_000);
    guests.push(guest);
    return guest;
  }

  /** The MACs of the DHCP host entries of a network on this host (none when the host has no such network). */
  async function dhcpMacs(networkId: string): Promise<string[]> {
    const name = libvirtNetworkName(networkId);
    const xml = await virsh(stack.config.compute.libvirtUri, ['net-dumpxml', name]).catch(() => '');
    return [...xml.matchAll(/<host mac=['"]([^'"]+)['"]/g)].map((match) => match[1]!);
  }

  beforeAll(async () => {
    stack = await startTestStack();
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    const image = await guestImage();
    await Promise.all(
      owners.map(async (owner) => {
        const server = { uuid: randomUUID(), imageId: randomUUID(), owner };
        await uploadBootImage(stack.glance, owner, image, { id: server.imageId, name: 'vm-shelve-guest' });
        servers.push(server);
      }),
    );
  });

  afterAll(async () => {
    for (const guest of guests) guest.close();
    for (const uuid of extraServers) {
      if (await getInstance(stack.pool, uuid).catch(() => null))
        await run('delete', { instanceUuid: uuid }).catch(() => undefined);
    }
    for (const server of servers) {
      const instance = await getInstance(stack.pool, server.uuid).catch(() => null);
      if (instance) await run('delete', { instanceUuid: server.uuid }).catch(() => undefined);
      await stack.glance.deleteImage(server.owner, server.imageId).catch(() => undefined);
      await rm(path.join(stack.config.compute.instancesPath, '_base', server.imageId), { force: true });
    }
    await api?.close();
    await stack?.stop();
  });

  /** Each guest takes its fixed IP by DHCP and answers there; the API shows that IP. */
  async function buildAndReach(): Promise<void> {
    const started = Date.now();
    await Promise.all(
      servers.map((server) =>
        run('build', {
          instanceUuid: server.uuid,
          displayName: `guest-${server.uuid.slice(0, 8)}`,
          ...server.owner,
          imageRef: server.imageId,
          flavor: { flavorid: '1', name: 'm1.small', vcpus: 1, memoryMb: 256, rootGb: 1, ephemeralGb: 0, swap: 0 },
          host: stack.config.compute.host,
        }),
      ),
    );
    const built = Date.now();
    const ports = await Promise.all(servers.map(portOf));
    // Two projects, two networks, two subnets.
    expect(ports[0]!.fixedIp.networkId).not.toBe(ports[1]!.fixedIp.networkId);
    expect(ports[0]!.fixedIp.cidr).not.toBe(ports[1]!.fixedIp.cidr);
    for (const [i, server] of servers.entries()) {
      const { fixedIp, macAddress } = ports[i]!;
      const token = `${server.owner.userId}:${server.owner.projectId}`;
      const response = await api.inject({
        method: 'GET',
        url: `/v2.1/servers/${server.uuid}`,
        headers: { 'x-auth-token': token },
      });
      expect(response.json().server.addresses).toEqual({
        private: [
          { addr: fixedIp.address, version: 4, 'OS-EXT-IPS:type': 'fixed', 'OS-EXT-IPS-MAC:mac_addr': macAddress },
        ],
      });
      guests[i] = await answerAt(fixedIp.address);
      expect(await guests[i]!.ping()).toBe(fixedIp.address);
    }
    console.log(
      `guests ${ports.map((port) => port.fixedIp.address).join(', ')}: built in ${built - started} ms, ` +
        `answering ${Date.now() - built} ms later`,
    );
  }

  /**
   * A guest reaches neither another project's guest nor the host's services, only its DHCP and
   * DNS; over IPv6 its bridge offers nothing at all.
   */
  async function probeIsolation(): Promise<void> {
    const [a, b] = await Promise.all(servers.map(portOf));
    const probes: string[] = [];
    const guest = {
      async probe(ip: string, port: number) {
        const started = Date.now();
        const answer = await guests[0]!.probe(ip, port);
        probes.push(`${ip}:${port} ${answer} (${Date.now() - started} ms)`);
        return answer;
      },
    };
    // The probe works: dnsmasq answers DNS over TCP on the guest's own gateway.
    expect(await guest.probe(a!.fixedIp.gateway, 53)).toBe('open');
    expect(await guest.probe(b!.fixedIp.address, guestProtocolPort)).toBe('closed');
    expect(await guest.probe(b!.fixedIp.gateway, 53)).toBe('closed');
    // A host service on every address: the host reaches it at the gateway's address, the guest does not.
    const service = net.createServer((socket) => socket.end());
    service.listen(0, '0.0.0.0');
    await new Promise((resolve) => service.once('listening', resolve));
    try {
      const { port } = service.address() as net.AddressInfo;
      const fromHost = net.connect({ host: a!.fixedIp.gateway, port });
      await new Promise((resolve, reject) => fromHost.once('connect', resolve).once('error', reject));
      fromHost.destroy();
      expect(await guest.probe(a!.fixedIp.gateway, port)).toBe('closed');
    } finally {
      service.close();
    }
    // No IPv6 on the projects' bridges: the host is not reachable there over IPv6 either, nor
    // does it route IPv6 between them.
    for (const port of [a!, b!]) {
      const bridge = bridgeName(port.fixedIp.networkId);
      expect(await readFile(`/proc/sys/net/ipv6/conf/${bridge}/disable_ipv6`, 'utf8')).toBe('1\n');
    }
    console.log(`guest ${a!.fixedIp.address} probed ${probes.join(', ')}`);
  }

  /** An offloaded guest comes back with the same IP and answers there; its entry leaves the host meanwhile. */
  async function offloadAndReturn(): Promise<void> {
    const [server] = servers;
    const port = await portOf(server!);
    guests[0]!.close();
    const offloaded = await run('shelve', { instanceUuid: server!.uuid, shelvedOffloadTime: 0 });
    expect(offloaded).toMatchObject({ vmState: 'shelved_offloaded', host: null });
    expect(await dhcpMacs(port.fixedIp.networkId)).not.toContain(port.macAddress);

    const started = Date.now();
    const unshelved = await run('unshelve', { instanceUuid: server!.uuid });
    expect(unshelved).toMatchObject({ vmState: 'active', host: stack.config.compute.host });
    expect(unshelved.ports).toEqual([{ ...port, bindingHost: stack.config.compute.host }]);
    const active = Date.now();
    const guest = await answerAt(port.fixedIp.address);
    expect(await guest.ping()).toBe(port.fixedIp.address);
    console.log(
      `unshelved ${port.fixedIp.address}: ACTIVE in ${active - started} ms, answering ${Date.now() - active} ms later`,
    );
  }

  /**
   * An address a deleted server held, taken by a new server of the project while the network stays
   * on the host (A keeps it there): the new guest gets it by DHCP, though dnsmasq still had a lease
   * of it for the deleted guest's MAC.
   */
  async function reuseAddress(): Promise<void> {
    const [a] = servers;
    const build = async () => {
      const uuid = randomUUID();
      extraServers.push(uuid);
      await run('build', {
        instanceUuid: uuid,
        displayName: `guest-${uuid.slice(0, 8)}`,
        ...a!.owner,
        imageRef: a!.imageId,
        flavor: { flavorid: '1', name: 'm1.small', vcpus: 1, memoryMb: 256, rootGb: 1, ephemeralGb: 0, swap: 0 },
        host: stack.config.compute.host,
      });
      const server = { uuid, imageId: a!.imageId, owner: a!.owner };
      const port = await portOf(server);
      const guest = await answerAt(port.fixedIp.address);
      expect(await guest.ping()).toBe(port.fixedIp.address);
      guest.close();
      return { uuid, port };
    };
    const first = await build();
    await run('delete', { instanceUuid: first.uuid });
    const second = await build();
    expect(second.port.fixedIp.address).toBe(first.port.fixedIp.address);
    expect(second.port.macAddress).not.toBe(first.port.macAddress);
    await run('delete', { instanceUuid: second.uuid });
  }

  /** Deleting the servers leaves no DHCP entry for their ports. */
  async function deleteAll(): Promise<void> {
    const ports = await Promise.all(servers.map(portOf));
    await Promise.all(servers.map((server) => run('delete', { instanceUuid: server.uuid })));
    for (const port of ports) expect(await dhcpMacs(port.fixedIp.networkId)).not.toContain(port.macAddress);
  }

  // One journey on two guests: each step needs what the one before left (the guests up, then A
  // back from its offload), and booting guests under TCG costs seconds each.
  it("two guests on their projects' networks: fixed IPs, isolation, the same IP after unshelve, a deleted guest's IP reused, no DHCP entry after delete", async () => {
    await buildAndReach();
    await probeIsolation();
    await offloadAndReturn();
    await reuseAddress();
    await deleteAll();
  }, 300_000);
});
