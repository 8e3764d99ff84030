// A host's side of the networks (Neutron's DHCP and L2 agents, in short): each network with a
// port on this host is a libvirt isolated network (no <forward>) on a bridge of its own, with the
// gateway's address on the bridge and a DHCP host entry per port, so that a guest takes its
// port's fixed IP on whichever host it runs. libvirt runs dnsmasq for it and adds the firewall
// rules of an isolated network: nothing is forwarded to or from its bridge, so guests of
// different projects (different networks, different bridges) cannot reach each other, and no
// bridge is joined to the machine's real interfaces. The rule below keeps the guests from the
// host's own services too.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { bridgeName, libvirtNetworkName, virsh } from './libvirt.js';
import type { Port } from './nova.js';

type FixedIp = NonNullable<Port['fixedIp']>;

const run = promisify(execFile);

/** The filter chain that stands between guests and the host (docs/stack.md). */
const INPUT_CHAIN = 'VM-SHELVE-INPUT';

/**
 * libvirt's test driver runs no guests, so there is nothing to network (and every virsh run sees
 * a fresh copy of it).
 */
function runsGuests(uri: string): boolean {
  return !uri.startsWith('test:');
}

function dhcpHostXml(mac: string, ip: string): string {
  return `<host mac='${mac}' ip='${ip}'/>`;
}

function networkXml(fixedIp: FixedIp, hosts: string[]): string {
  const prefix = fixedIp.cidr.split('/')[1];
  return `<network>
  <name>${libvirtNetworkName(fixedIp.networkId)}</name>
  <uuid>${fixedIp.networkId}</uuid>
  <bridge name='${bridgeName(fixedIp.networkId)}' stp='off' delay='0'/>
  <ip address='${fixedIp.gateway}' prefix='${prefix}'>
    <dhcp>${hosts.join('')}</dhcp>
  </ip>
</network>
`;
}

/** The DHCP host entries of a libvirt network's XML, as written back by libvirt. */
function dhcpHosts(xml: string): { mac: string; ip: string; xml: string }[] {
  return [...xml.matchAll(/<host\b[^>]*\/>/g)].flatMap(([entry]) => {
    const mac = /\smac=['"]([^'"]+)['"]/.exec(entry)?.[1];
    const ip = /\sip=['"]([^'"]+)['"]/.exec(entry)?.[1];
    return mac && ip ? [{ mac: mac.toLowerCase(), ip, xml: entry }] : [];
  });
}

let inputChain: Promise<void> | undefined;

async function iptables(args: string[]): Promise<string> {
  return (await run('iptables', ['-w', ...args])).stdout;
}

function hasRule(rule: string[]): Promise<boolean> {
  return iptables(['-C', INPUT_CHAIN, ...rule]).then(
    () => true,
    () => false,
  );
}

/**
 * The chain that lets guests ask the host for DHCP, and (with dnsRules, per network) DNS at
 * their own gateway, and get answers on connections the host opened; anything else they send
 * the host is dropped. libvirt's own rules accept DHCP and DNS from a bridge at any address of
 * the host, another network's gateway included, and leave the rest to the host's policy. Written
 * once per host: other processes may have added their networks' rules to it already.
 */
function ensureInputChain(): Promise<void> {
  inputChain ??= (async () => {
    await iptables(['-N', INPUT_CHAIN]).catch(() => undefined);
    // The drop goes in last: a chain that has it is whole.
    if (await hasRule(['-j', 'DROP'])) return;
    for (const rule of [
      ['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'],
      ['-p', 'udp', '--dport', '67', '-j', 'ACCEPT'],
    ]) {
      if (!(await hasRule(rule))) await iptables(['-A', INPUT_CHAIN, ...rule]);
    }
    await iptables(['-A', INPUT_CHAIN, '-j', 'DROP']);
  })().catch((error: unknown) => {
    inputChain = undefined;
    throw error;
  });
  return inputChain;
}

/** DNS, over UDP and TCP, from a network's bridge to its own gateway's dnsmasq. */
function dnsRules(fixedIp: Pick<FixedIp, 'networkId' | 'gateway'>): string[][] {
  return ['udp', 'tcp'].map((protocol) => [
    '-i',
    bridgeName(fixedIp.networkId),
    '-d',
    fixedIp.gateway,
    '-p',
    protocol,
    '--dport',
    '53',
    '-j',
    'ACCEPT',
  ]);
}

async function allowDns(fixedIp: FixedIp): Promise<void> {
  await ensureInputChain();
  for (const rule of dnsRules(fixedIp)) {
    if (!(await hasRule(rule))) await iptables(['-I', INPUT_CHAIN, '1', ...rule]);
  }
}

/**
 * Puts the jump to the chain first in INPUT, ahead of libvirt's, which accepts DNS from a bridge
 * at any of the host's addresses. libvirt inserts its own jump first when it starts its first
 * network, so this runs after the network starts, at every spawn.
 */
async function placeInputRuleFirst(): Promise<void> {
  const jump = ['-i', 'vmsbr+', '-j', INPUT_CHAIN];
  const first = (await iptables(['-S', 'INPUT'])).split('\n').find((rule) => rule.startsWith('-A '));
  if (first === `-A INPUT ${jump.join(' ')}`) return;
  await iptables(['-D', 'INPUT', ...jump]).catch(() => undefined);
  await iptables(['-I', 'INPUT', '1', ...jump]);
}

/** Where a change to a libvirt network applies: the running network, its persistent definition. */
type Scope = '--live' | '--config';

async function isActive(uri: string, name: string): Promise<boolean> {
  return /^Active:\s+yes$/m.test(await virsh(uri, ['net-info', name]));
}

/**
 * The network's XML in each scope it has (the definition, and the running network when it runs),
 * or null when libvirt has no such network. Each is checked on its own: a definition another
 * process wrote while the network ran may differ from what runs.
 */
async function networkStates(uri: string, name: string): Promise<{ scope: Scope; xml: string }[] | null> {
  const definition = await virsh(uri, ['net-dumpxml', '--inactive', name]).catch(() => null);
  if (definition === null) return null;
  const states: { scope: Scope; xml: string }[] = [{ scope: '--config', xml: definition }];
  if (await isActive(uri, name)) states.push({ scope: '--live', xml: await virsh(uri, ['net-dumpxml', name]) });
  return states;
}

async function updateDhcpHost(uri: string, name: string, command: 'add-last' | 'delete', xml: string, scope: Scope) {
  await virsh(uri, ['net-update', name, command, 'ip-dhcp-host', xml, scope]);
}

/** One change at a time to each network from this process: concurrent spawns queue here. */
const networkLocks = new Map<string, Promise<unknown>>();

function withNetworkLock<T>(name: string, work: () => Promise<T>): Promise<T> {
  const result = (networkLocks.get(name) ?? Promise.resolve()).then(work, work);
  const settled = result.catch(() => undefined);
  networkLocks.set(name, settled);
  void settled.then(() => {
    if (networkLocks.get(name) === settled) networkLocks.delete(name);
  });
  return result;
}

/** Makes the libvirt network of `fixedIp`'s network (defined, autostarted, running) with these entries. */
async function defineNetwork(uri: string, fixedIp: FixedIp, hosts: string[]): Promise<void> {
  const name = libvirtNetworkName(fixedIp.networkId);
  const dir = await mkdtemp(path.join(tmpdir(), 'vm-shelve-net-'));
  try {
    const file = path.join(dir, 'network.xml');
    await writeFile(file, networkXml(fixedIp, hosts));
    await virsh(uri, ['net-define', file]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await virsh(uri, ['net-autostart', name]);
}

/** The MAC addresses and client ids holding a lease of `ip` on the network, as libvirt lists them. */
async function leasesOf(uri: string, name: string, ip: string): Promise<{ mac: string; clientId: string | null }[]> {
  const table = await virsh(uri, ['net-dhcp-leases', name]);
  const leases = [];
  for (const line of table.split('\n')) {
    const match = /\s((?:[0-9a-f]{2}:){5}[0-9a-f]{2})\s+ipv4\s+([\d.]+)\/\d+\s+\S+\s+(\S+)/i.exec(line);
    if (match?.[2] === ip) leases.push({ mac: match[1]!.toLowerCase(), clientId: match[3] === '-' ? null : match[3]! });
  }
  return leases;
}

/**
 * Ends every lease of `ip` that another MAC holds (a deleted or moved guest's, which dnsmasq keeps
 * until it expires, an hour on): dnsmasq will not hand a host entry's address to its MAC while
 * another holds a lease of it, so a new port with a freed address would get none. dhcp_release
 * sends dnsmasq the DHCPRELEASE the old guest never did, as Neutron's DHCP agent does.
 */
async function releaseOtherLeases(uri: string, name: string, bridge: string, mac: string, ip: string): Promise<void> {
  const others = async () => (await leasesOf(uri, name, ip)).filter((lease) => lease.mac !== mac);
  const stale = await others();
  if (stale.length === 0) return;
  for (const lease of stale) {
    await run('dhcp_release', [bridge, ip, lease.mac, ...(lease.clientId ? [lease.clientId] : [])]);
  }
  // dnsmasq takes the release from the bridge as a packet: wait until libvirt shows it taken.
  for (let wait = 0; wait < 20 && (await others()).length > 0; wait++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Adds the port's DHCP host entry where it lacks, first removing any entry that holds its MAC or its IP. */
async function ensureDhcpHost(uri: string, name: string, mac: string, ip: string): Promise<void> {
  for (const { scope, xml } of (await networkStates(uri, name)) ?? []) {
    const hosts = dhcpHosts(xml);
    if (hosts.some((host) => host.mac === mac && host.ip === ip)) continue;
    for (const stale of hosts.filter((host) => host.mac === mac || host.ip === ip)) {
      await updateDhcpHost(uri, name, 'delete', stale.xml, scope);
    }
    await updateDhcpHost(uri, name, 'add-last', dhcpHostXml(mac, ip), scope);
  }
}

/**
 * Makes sure each port's network runs on this host, serving the port's fixed IP to its MAC by
 * DHCP, and that guests cannot reach the host's services. Idempotent: a retried or concurrent
 * spawn finds the network and the entries in place.
 */
export async function ensurePortNetworks(uri: string, ports: Port[]): Promise<void> {
  if (!runsGuests(uri)) return;
  // A port from before networks has none (nor, in a workflow started before them, the field).
  const onNetworks = ports.filter((port) => port.fixedIp);
  if (onNetworks.length === 0) return;
  for (const port of onNetworks) {
    const fixedIp = port.fixedIp!;
    const name = libvirtNetworkName(fixedIp.networkId);
    const mac = port.macAddress.toLowerCase();
    await withNetworkLock(name, async () => {
      if ((await networkStates(uri, name)) === null) {
        await defineNetwork(uri, fixedIp, [dhcpHostXml(mac, fixedIp.address)]);
      }
      if (!(await isActive(uri, name))) {
        // Another process may start it first: what counts is that it runs.
        await virsh(uri, ['net-start', name]).catch(async (error: unknown) => {
          if (!(await isActive(uri, name))) throw error;
        });
      }
      await ensureDhcpHost(uri, name, mac, fixedIp.address);
      await releaseOtherLeases(uri, name, bridgeName(fixedIp.networkId), mac, fixedIp.address);
      await allowDns(fixedIp);
    });
  }
  await placeInputRuleFirst();
}

/**
 * Removes the DHCP host entries of a domain's interfaces from their networks, before the domain
 * is undefined: a removed instance's MAC and IP must not stay served on this host (an offloaded
 * instance gets them back where it is unshelved). A network left with no entry is removed.
 */
export async function removeDhcpHosts(uri: string, domainXml: string): Promise<void> {
  if (!runsGuests(uri)) return;
  for (const [element] of domainXml.matchAll(/<interface\s+type=['"]network['"][\s\S]*?<\/interface>/g)) {
    const name = /<source\s+network=['"]([^'"]+)['"]/.exec(element)?.[1];
    const mac = /<mac\s+address=['"]([^'"]+)['"]/.exec(element)?.[1]?.toLowerCase();
    if (!name?.startsWith(libvirtNetworkName('')) || !mac) continue;
    await withNetworkLock(name, async () => {
      const states = await networkStates(uri, name);
      if (states === null) return;
      let left = 0;
      for (const { scope, xml } of states) {
        for (const host of dhcpHosts(xml)) {
          if (host.mac === mac) await updateDhcpHost(uri, name, 'delete', host.xml, scope);
          else left++;
        }
      }
      // No port of this network left on the host: its bridge and dnsmasq go too. A spawn that
      // needs it again makes it again.
      if (left === 0) {
        if (states.some((state) => state.scope === '--live')) await virsh(uri, ['net-destroy', name]);
        await virsh(uri, ['net-undefine', name]);
        const gateway = /<ip\s+address=['"]([^'"]+)['"]/.exec(states[0]!.xml)?.[1];
        const networkId = name.slice(libvirtNetworkName('').length);
        for (const rule of gateway ? dnsRules({ networkId, gateway }) : []) {
          await iptables(['-D', INPUT_CHAIN, ...rule]).catch(() => undefined);
        }
      }
    });
  }
}
