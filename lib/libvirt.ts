// libvirt through @unraid/libvirt (node-libvirt no longer builds on Node 20), plus the
// instance → domain mapping.
import { type Domain, DomainState, Hypervisor, LibvirtError } from '@unraid/libvirt';
import { type Instance, PowerState } from './nova.js';

/** The libvirt domain of an instance is named after it and carries its uuid, as in Nova. */
export function domainName(instanceUuid: string): string {
  return `instance-${instanceUuid}`;
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

export interface DomainDisk {
  path: string;
  format: string;
}

/** The domain definition of an instance: its flavor's CPUs and memory, its root disk, a console. */
export function domainXml(
  instance: Pick<Instance, 'uuid' | 'displayName' | 'flavor'>,
  rootDisk: DomainDisk,
  virtType: 'kvm' | 'qemu',
): string {
  return `<domain type='${virtType}'>
  <name>${domainName(instance.uuid)}</name>
  <uuid>${instance.uuid}</uuid>
  <title>${escapeXml(instance.displayName)}</title>
  <memory unit='MiB'>${instance.flavor.memoryMb}</memory>
  <vcpu>${instance.flavor.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='${rootDisk.format}' cache='none'/>
      <source file='${escapeXml(rootDisk.path)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
`;
}

export function isDomainNotFound(error: unknown): boolean {
  return error instanceof LibvirtError && /domain not found/i.test(error.message);
}

/** One connection to a hypervisor, opened lazily and reopened after a failure. */
export class LibvirtConnection {
  private hypervisor: Promise<Hypervisor> | undefined;

  constructor(private readonly uri: string) {}

  async open(): Promise<Hypervisor> {
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
