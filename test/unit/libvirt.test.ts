import { DomainState } from '@unraid/libvirt';
import { describe, expect, it } from 'vitest';
import {
  bridgeName,
  domainName,
  domainRequestId,
  domainXml,
  METADATA_NAMESPACE,
  powerStateOf,
} from '../../lib/libvirt.js';

const instance = {
  uuid: '6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b',
  displayName: `<evil> & 'quoted' "name"`,
  flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 2, memoryMb: 512, rootGb: 1, ephemeralGb: 0, swap: 0 },
  ports: [
    {
      id: 'p1',
      network: 'private',
      macAddress: 'fa:16:3e:00:00:01',
      fixedIp: {
        address: '10.128.0.2',
        networkId: 'c0ffee00-1111-4222-8333-444455556666',
        cidr: '10.128.0.0/24',
        gateway: '10.128.0.1',
      },
      bindingHost: 'h1',
    },
  ],
};

describe('domainXml', () => {
  it("defines the instance's domain with its uuid, flavor and root disk", () => {
    const xml = domainXml(instance, { type: 'file', path: '/srv/instances/x/disk', format: 'qcow2' }, 'qemu');
    expect(xml).toContain(`<domain type='qemu'>`);
    expect(xml).toContain(`<name>${domainName(instance.uuid)}</name>`);
    expect(xml).toContain(`<uuid>${instance.uuid}</uuid>`);
    expect(xml).toContain(`<memory unit='MiB'>512</memory>`);
    expect(xml).toContain('<vcpu>2</vcpu>');
    expect(xml).toContain(`<driver name='qemu' type='qcow2' cache='none'/>`);
    expect(xml).toContain(`<source file='/srv/instances/x/disk'/>`);
    expect(xml).toContain(`<target dev='vda' bus='virtio'/>`);
    expect(xml).toContain(`<mac address='fa:16:3e:00:00:01'/>`);
  });

  it("puts a port with a fixed IP on its network's libvirt network, and an older port on user-mode networking", () => {
    const xml = domainXml(instance, { type: 'file', path: '/d/disk', format: 'qcow2' }, 'qemu');
    expect(xml).toContain(
      `<interface type='network'><source network='vm-shelve-c0ffee00-1111-4222-8333-444455556666'/><mac address='fa:16:3e:00:00:01'/><model type='virtio'/></interface>`,
    );
    const older = { ...instance, ports: [{ ...instance.ports[0]!, fixedIp: null }] };
    expect(domainXml(older, { type: 'file', path: '/d/disk', format: 'qcow2' }, 'qemu')).toContain(
      `<interface type='user'><mac address='fa:16:3e:00:00:01'/><model type='virtio'/></interface>`,
    );
    expect(bridgeName('c0ffee00-1111-4222-8333-444455556666')).toBe('vmsbr-c0ffee00');
  });

  it('adds the local disks after the root disk', () => {
    const local = { type: 'file', path: '/d/disk.eph0', format: 'qcow2' } as const;
    const xml = domainXml(instance, { type: 'file', path: '/d/disk', format: 'qcow2' }, 'kvm', { localDisks: [local] });
    expect(xml).toMatch(/<source file='\/d\/disk\.eph0'\/>\s*<backingStore\/>\s*<target dev='vdb' bus='virtio'\/>/);
  });

  it('writes out the backing chain, so that libvirt never reads one from an image header', () => {
    const overlay = {
      type: 'file',
      path: '/i/x/disk',
      format: 'qcow2',
      backing: { path: '/i/_base/img', format: 'raw' },
    } as const;
    const xml = domainXml(instance, overlay, 'kvm');
    expect(xml).toContain(
      `<source file='/i/x/disk'/>\n      <backingStore type='file'><format type='raw'/><source file='/i/_base/img'/><backingStore/></backingStore>`,
    );
    const standalone = domainXml(instance, { type: 'file', path: '/i/x/disk', format: 'qcow2' }, 'kvm');
    expect(standalone).toMatch(/<source file='\/i\/x\/disk'\/>\s*<backingStore\/>/);
  });

  it('attaches a root volume from its storage pool', () => {
    const xml = domainXml(instance, { type: 'volume', pool: 'vols', volume: 'volume-1', format: 'qcow2' }, 'kvm');
    expect(xml).toContain(`<disk type='volume' device='disk'>`);
    expect(xml).toContain(`<source pool='vols' volume='volume-1'/>`);
  });

  it("logs the serial console to the instance's console.log when asked, keeping earlier boots", () => {
    const disk = { type: 'file', path: '/d/disk', format: 'qcow2' } as const;
    expect(domainXml(instance, disk, 'kvm', { consoleLog: '/i/x/console.log' })).toContain(
      `<serial type='pty'><log file='/i/x/console.log' append='on'/></serial>`,
    );
    expect(domainXml(instance, disk, 'kvm')).toContain(`<serial type='pty'/>`);
  });

  it('escapes the display name instead of letting it into the markup', () => {
    const xml = domainXml(instance, { type: 'file', path: '/d', format: 'raw' }, 'kvm');
    expect(xml).toContain('<title>&lt;evil&gt; &amp; &apos;quoted&apos; &quot;name&quot;</title>');
    expect(xml).not.toContain('<evil>');
  });
});

describe('the request id in the domain metadata', () => {
  const disk = { type: 'file', path: '/d/disk', format: 'qcow2' } as const;

  it("marks the domain with the spawn's request id, in the project's own namespace", () => {
    const xml = domainXml(instance, disk, 'kvm', { requestId: 'req-1' });
    expect(xml).toContain(
      `<metadata><vmshelve:instance xmlns:vmshelve='${METADATA_NAMESPACE}' request-id='req-1'/></metadata>`,
    );
    expect(domainRequestId(xml)).toBe('req-1');
  });

  it('escapes the request id, and reads it back', () => {
    const xml = domainXml(instance, disk, 'kvm', { requestId: `req-<a>&'b"` });
    expect(xml).not.toContain('<a>');
    expect(domainRequestId(xml)).toBe(`req-<a>&'b"`);
  });

  it('reads the id back as libvirt writes the domain out', () => {
    // `virsh dumpxml` of a domain defined with domainXml's metadata (libvirt 9.0).
    const dumped = `<domain type='qemu'>
  <name>instance-x</name>
  <metadata>
    <vmshelve:instance xmlns:vmshelve="${METADATA_NAMESPACE}" request-id="req-a&amp;b"/>
  </metadata>
</domain>`;
    expect(domainRequestId(dumped)).toBe('req-a&b');
  });

  it('finds none in a domain without the mark, or with an element of another namespace', () => {
    expect(domainRequestId(domainXml(instance, disk, 'kvm'))).toBeNull();
    expect(
      domainRequestId(`<metadata><other:instance xmlns:other='https://example.com/x' request-id='req-1'/></metadata>`),
    ).toBeNull();
  });
});

describe('powerStateOf', () => {
  it("maps libvirt's domain states to Nova's power_state", () => {
    expect(powerStateOf(DomainState.RUNNING)).toBe(1);
    expect(powerStateOf(DomainState.BLOCKED)).toBe(1);
    expect(powerStateOf(DomainState.PAUSED)).toBe(3);
    expect(powerStateOf(DomainState.SHUTOFF)).toBe(4);
    expect(powerStateOf(DomainState.SHUTDOWN)).toBe(4);
    expect(powerStateOf(DomainState.CRASHED)).toBe(6);
    expect(powerStateOf(DomainState.PMSUSPENDED)).toBe(7);
    expect(powerStateOf(DomainState.NOSTATE)).toBe(0);
  });
});
