// libvirt through @unraid/libvirt (node-libvirt no longer builds on Node 20), plus the
// instance → domain mapping.
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { type Domain, DomainState, Hypervisor, LibvirtError } from '@unraid/libvirt';
import { LibvirtErrorCode, libvirtErrorCode } from './compute-errors.js';
import { type Instance, PowerState } from './nova.js';

/** The libvirt domain of an instance is named after it and carries its uuid, as in Nova. */
export function domainName(instanceUuid: string): string {
  return `instance-${instanceUuid}`;
}

/** The libvirt network that serves a network's ports on a host (lib/host-network.ts). */
export function libvirtNetworkName(networkId: string): string {
  return `vm-shelve-${networkId}`;
}

/** The Linux bridge of that libvirt network: interface names are at most 15 characters. */
export function bridgeName(networkId: string): string {
  return `vmsbr-${networkId.replace(/-/g, '').slice(0, 8)}`;
}

/** Nova's power_state for a libvirt domain state (nova/virt/libvirt/driver.py LIBVIRT_POWER_STATE). */
export function powerStateOf(state: DomainState): PowerState {
  switch (state) {
    case DomainState.RUNNING:
    case DomainState.BLOCKED:
      return PowerState.RUNNING;
    case DomainState.PAUSED:
      return PowerState.PAUSED;
    case DomainState.SHUTDOWN:
    case DomainState.SHUTOFF:
      return PowerState.SHUTDOWN;
    case DomainState.CRASHED:
      return PowerState.CRASHED;
    case DomainState.PMSUSPENDED:
      return PowerState.SUSPENDED;
    default:
      return PowerState.NOSTATE;
  }
}

function escapeXml(text: string): string {
  return text.replace(
    /[<>&'"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!,
  );
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', apos: "'", quot: '"' };

/** The text of an attribute value as libvirt writes it back (named and numeric entities). */
function unescapeXml(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|\w+);/gi, (entity, name: string) => {
    if (name.startsWith('#x') || name.startsWith('#X')) return String.fromCodePoint(parseInt(name.slice(2), 16));
    if (name.startsWith('#')) return String.fromCodePoint(parseInt(name.slice(1), 10));
    return ENTITIES[name] ?? entity;
  });
}

/**
 * Where a domain's disk lives: a file on the host (a qcow2 overlay names its one backing file), or
 * a volume in a storage pool.
 */
export type DomainDisk =
  | { type: 'file'; path: string; format: string; backing?: { path: string; format: string } }
  | { type: 'volume'; pool: string; volume: string; format: string };

function diskSource(disk: DomainDisk): string {
  return disk.type === 'file'
    ? `<source file='${escapeXml(disk.path)}'/>`
    : `<source pool='${escapeXml(disk.pool)}' volume='${escapeXml(disk.volume)}'/>`;
}

/**
 * The whole backing chain, written out: libvirt then never reads a chain (or a format) from an
 * image's header, where a tenant's bytes could name a host file.
 */
function backingStoreXml(disk: DomainDisk): string {
  if (disk.type !== 'file' || !disk.backing) return '<backingStore/>';
  return `<backingStore type='file'><format type='${escapeXml(disk.backing.format)}'/><source file='${escapeXml(disk.backing.path)}'/><backingStore/></backingStore>`;
}

function diskXml(disk: DomainDisk, target: string): string {
  return `<disk type='${disk.type}' device='disk'>
      <driver name='qemu' type='${escapeXml(disk.format)}' cache='none'/>
      ${diskSource(disk)}
      ${backingStoreXml(disk)}
      <target dev='${target}' bus='virtio'/>
    </disk>`;
}

/** The XML namespace of the project's own element in a domain's <metadata>. */
export const METADATA_NAMESPACE = 'https://github.com/vm-shelve/instance/1';

/**
 * The request whose spawn defined a domain, from the domain's XML; null for a domain this project
 * did not mark (defined by hand, or before domains carried it).
 */
export function domainRequestId(xml: string): string | null {
  // libvirt keeps the element as it was defined, but may write it back with either quote style.
  for (const [element, prefix] of xml.matchAll(/<([\w.-]+):instance\b[^>]*>/g)) {
    const namespace = new RegExp(`\\sxmlns:${prefix}=(["'])([^"']*)\\1`).exec(element)?.[2];
    if (namespace !== METADATA_NAMESPACE) continue;
    const requestId = /\srequest-id=(["'])([^"']*)\1/.exec(element)?.[2];
    if (requestId !== undefined) return unescapeXml(requestId);
  }
  return null;
}

export interface DomainOptions {
  /** The flavor's local disks (ephemeral, swap), after the root disk. */
  localDisks?: DomainDisk[];
  /** The spawn that defines the domain, so that a later request never mistakes it for its own. */
  requestId?: string | null;
  /**
   * A file that keeps what the guest prints on its serial console, as Nova's console.log: how an
   * operator (and a test) sees a guest's boot and its own power-off.
   */
  consoleLog?: string;
}

/**
 * The domain definition of an instance: its flavor's CPUs and memory, a serial console, and its
 * disks: the root disk as vda, then the local ones (ephemeral, swap) as vdb, vdc, ….
 */
export function domainXml(
  instance: Pick<Instance, 'uuid' | 'displayName' | 'flavor' | 'ports'>,
  rootDisk: DomainDisk,
  virtType: 'kvm' | 'qemu',
  { localDisks = [], requestId = null, consoleLog }: DomainOptions = {},
): string {
  const disks = [rootDisk, ...localDisks].map((disk, i) => diskXml(disk, `vd${String.fromCharCode(97 + i)}`));
  // A port with a fixed IP is on its network's libvirt network, whose DHCP gives it that IP; one
  // recorded before networks were gets QEMU's user-mode network (no bridge on the host).
  const interfaces = instance.ports.map((port) => {
    const mac = `<mac address='${escapeXml(port.macAddress)}'/>`;
    return port.fixedIp
      ? `<interface type='network'><source network='${libvirtNetworkName(port.fixedIp.networkId)}'/>${mac}<model type='virtio'/></interface>`
      : `<interface type='user'>${mac}<model type='virtio'/></interface>`;
  });
  return `<domain type='${virtType}'>
  <name>${domainName(instance.uuid)}</name>
  <uuid>${instance.uuid}</uuid>
  <title>${escapeXml(instance.displayName)}</title>
${requestId === null ? '' : `  <metadata><vmshelve:instance xmlns:vmshelve='${METADATA_NAMESPACE}' request-id='${escapeXml(requestId)}'/></metadata>\n`}  <memory unit='MiB'>${instance.flavor.memoryMb}</memory>
  <vcpu>${instance.flavor.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    ${[...disks, ...interfaces].join('\n    ')}
    ${consoleLog === undefined ? `<serial type='pty'/>` : `<serial type='pty'><log file='${escapeXml(consoleLog)}' append='on'/></serial>`}
    <console type='pty'/>
  </devices>
</domain>
`;
}

const run = promisify(execFile);

/** virsh, for what the binding lacks (storage pools, networks); always an argument list. */
export async function virsh(uri: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run('virsh', ['-q', '-c', uri, ...args]);
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`virsh ${args[0]} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}

/**
 * A domain's state with libvirt's reason for it, as `virsh domstate --reason` prints it: after a
 * power-off, `shut off (shutdown)` when the guest powered itself off, `shut off (destroyed)` when
 * it was destroyed.
 */
export async function domainStateReason(uri: string, instanceUuid: string): Promise<string> {
  return (await virsh(uri, ['domstate', '--reason', domainName(instanceUuid)])).trim();
}

/**
 * Defines, builds and starts a directory storage pool if libvirt does not have it running yet;
 * refuses a pool of that name that points at another folder.
 */
export async function ensureStoragePool(uri: string, pool: { name: string; path: string }): Promise<void> {
  // A pool whose folder was removed (say, with .stack/) cannot start again without it.
  await mkdir(pool.path, { recursive: true });
  const info = await virsh(uri, ['pool-info', pool.name]).catch(() => null);
  if (info !== null) {
    const definition = await virsh(uri, ['pool-dumpxml', pool.name]);
    const folder = /<path>([^<]*)<\/path>/.exec(definition)?.[1];
    if (folder !== pool.path) {
      throw new Error(
        `libvirt storage pool ${pool.name} holds ${folder}, not ${pool.path}: set VOLUME_POOL to another name`,
      );
    }
  } else {
    await virsh(uri, ['pool-define-as', pool.name, 'dir', '--target', pool.path]);
    await virsh(uri, ['pool-build', pool.name]);
    await virsh(uri, ['pool-autostart', pool.name]);
  }
  if (!info || !/State:\s+running/.test(info)) await virsh(uri, ['pool-start', pool.name]);
}

/** Makes libvirt see volume files put into the pool's folder. */
export async function refreshStoragePool(uri: string, name: string): Promise<void> {
  await virsh(uri, ['pool-refresh', name]);
}

export function isDomainNotFound(error: unknown): boolean {
  return error instanceof LibvirtError && libvirtErrorCode(error) === LibvirtErrorCode.NO_DOMAIN;
}

/** One connection to a hypervisor, opened lazily and reopened after a failure or a libvirtd restart. */
export class LibvirtConnection {
  private hypervisor: Promise<Hypervisor> | undefined;

  constructor(readonly uri: string) {}

  async open(): Promise<Hypervisor> {
    const current = this.hypervisor;
    if (current) {
      // After libvirtd restarts, an open connection's socket stays closed for good: check it is
      // alive (one local round trip) and open a new one when it is not.
      const alive = await current
        .then((hypervisor) => hypervisor.connectGetHostname())
        .then(
          () => true,
          () => false,
        );
      if (alive) return current;
      if (this.hypervisor === current) this.hypervisor = undefined;
    }
    this.hypervisor ??= (async () => {
      const hypervisor = new Hypervisor({ uri: this.uri });
      await hypervisor.connectOpen();
      return hypervisor;
    })().catch((error: unknown) => {
      this.hypervisor = undefined;
      throw error;
    });
    return this.hypervisor;
  }

  /** The instance's domain, or null when libvirt has none. */
  async lookupInstance(instanceUuid: string): Promise<Domain | null> {
    const hypervisor = await this.open();
    try {
      return await hypervisor.domainLookupByUUIDString(instanceUuid);
    } catch (error) {
      if (isDomainNotFound(error)) return null;
      throw error;
    }
  }

  async close(): Promise<void> {
    const hypervisor = this.hypervisor;
    this.hypervisor = undefined;
    if (hypervisor) await (await hypervisor).connectClose();
  }
}
