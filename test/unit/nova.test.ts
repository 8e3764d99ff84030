import { describe, expect, it } from 'vitest';
import {
  imageSystemMetadata,
  macAddress,
  type Instance,
  serverStatus,
  shelvedAtTimestamp,
  shelvedImageName,
  snapshotImageProperties,
} from '../../lib/nova.js';

const instance: Instance = {
  uuid: '6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b',
  displayName: 'web-1',
  projectId: 'p1',
  userId: 'u1',
  host: 'h1',
  node: 'h1',
  availabilityZone: 'nova',
  requestedAvailabilityZone: null,
  vmState: 'active',
  taskState: 'shelving',
  powerState: 1,
  imageRef: 'img-1',
  flavor: { flavorid: '2', name: 'm1.small', vcpus: 2, memoryMb: 2048, rootGb: 20, ephemeralGb: 0, swap: 0 },
  launchedAt: '2026-01-01T00:00:00.000Z',
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
  systemMetadata: {
    image_base_image_ref: 'img-1',
    image_os_type: 'linux',
    image_hw_disk_bus: 'virtio',
    image_disk_format: 'qcow2',
    image_min_ram: '0',
    image_mappings: '[]',
    image_cache_in_nova: 'True',
    image_img_signature: 'sig',
    image_os_glance_import_task: 'x',
    clean_attempts: '1',
  },
  blockDeviceMappings: [],
  ports: [],
};

describe('snapshotImageProperties', () => {
  it('inherits image_* system metadata without the prefix, but not the non-inheritable ones', () => {
    const properties = snapshotImageProperties(instance);
    expect(properties).toMatchObject({ base_image_ref: 'img-1', os_type: 'linux', hw_disk_bus: 'virtio' });
    for (const left of [
      'mappings',
      'cache_in_nova',
      'img_signature',
      'os_glance_import_task',
      'disk_format',
      'min_ram',
    ]) {
      expect(properties).not.toHaveProperty(left);
    }
    expect(properties).not.toHaveProperty('clean_attempts');
  });

  it('marks the image a snapshot of this instance, with the flavor as instance_type_*', () => {
    expect(snapshotImageProperties(instance)).toMatchObject({
      image_type: 'snapshot',
      image_location: 'snapshot',
      image_state: 'available',
      instance_uuid: instance.uuid,
      user_id: 'u1',
      owner_id: 'p1',
      instance_type_name: 'm1.small',
      instance_type_flavorid: '2',
      instance_type_vcpus: '2',
      instance_type_memory_mb: '2048',
      instance_type_root_gb: '20',
    });
  });
});

describe('imageSystemMetadata', () => {
  it("keeps a boot image's formats, minimums and properties as image_* strings, not Glance's own fields", () => {
    const metadata = imageSystemMetadata({
      id: 'img-1',
      name: 'cirros',
      status: 'active',
      checksum: 'abc',
      disk_format: 'qcow2',
      container_format: 'bare',
      min_ram: 64,
      os_type: 'linux',
      hw_rng_model: null,
    });
    expect(metadata).toEqual({
      image_disk_format: 'qcow2',
      image_container_format: 'bare',
      image_min_ram: '64',
      image_os_type: 'linux',
    });
  });
});

describe('macAddress', () => {
  it("makes an address in OpenStack's fa:16:3e range from a port id", () => {
    expect(macAddress('6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b')).toBe('fa:16:3e:6f:1c:2b');
  });
});

describe('Nova formats', () => {
  it('writes shelved_at as naive UTC isoformat with microseconds, even on a whole second', () => {
    expect(shelvedAtTimestamp(new Date('2024-05-01T10:00:00.000Z'))).toBe('2024-05-01T10:00:00.000000');
    expect(shelvedAtTimestamp(new Date('2024-05-01T10:00:00.123Z'))).toBe('2024-05-01T10:00:00.123000');
  });

  it('names the snapshot after the instance and maps shelved vm_states to their API status', () => {
    expect(shelvedImageName(instance)).toBe('web-1-shelved');
    expect(serverStatus('shelved')).toBe('SHELVED');
    expect(serverStatus('shelved_offloaded')).toBe('SHELVED_OFFLOADED');
    expect(serverStatus('stopped')).toBe('SHUTOFF');
  });

  it("keeps the snapshot's name within Glance's 255 characters, counting characters, not UTF-16 units", () => {
    const longest = `${'名ü'.repeat(127)}z`;
    const name = shelvedImageName({ displayName: longest });
    expect([...name]).toHaveLength(255);
    expect(name).toBe(`${[...longest].slice(0, 247).join('')}-shelved`);
  });

  it('replaces the characters Glance refuses in a name (4 bytes in UTF-8) with U+FFFD', () => {
    const name = shelvedImageName({ displayName: 'web 🙂 名 𝔘' });
    expect(name).toBe('web \uFFFD 名 \uFFFD-shelved');
    expect([...name].every((character) => Buffer.byteLength(character) <= 3)).toBe(true);
  });
});
