// Nova's vocabulary for an instance's life (../shared/spec/shelve-behaviour.md §1, §2).
// Pure data and functions only: the workflow sandbox imports this module too.

export const VmState = {
  BUILDING: 'building',
  ACTIVE: 'active',
  STOPPED: 'stopped',
  PAUSED: 'paused',
  SUSPENDED: 'suspended',
  SHELVED: 'shelved',
  SHELVED_OFFLOADED: 'shelved_offloaded',
  ERROR: 'error',
  DELETED: 'deleted',
} as const;
export type VmState = (typeof VmState)[keyof typeof VmState];

export const TaskState = {
  SPAWNING: 'spawning',
  SHELVING: 'shelving',
  SHELVING_IMAGE_PENDING_UPLOAD: 'shelving_image_pending_upload',
  SHELVING_IMAGE_UPLOADING: 'shelving_image_uploading',
  SHELVING_OFFLOADING: 'shelving_offloading',
  UNSHELVING: 'unshelving',
  POWERING_ON: 'powering-on',
  DELETING: 'deleting',
} as const;
export type TaskState = (typeof TaskState)[keyof typeof TaskState];

/** The task_states of a shelve before its snapshot is recorded (it may be uploading into one). */
export const SHELVE_TASK_STATES: readonly TaskState[] = [
  TaskState.SHELVING,
  TaskState.SHELVING_IMAGE_PENDING_UPLOAD,
  TaskState.SHELVING_IMAGE_UPLOADING,
];

/** Nova's power_state integers. */
export const PowerState = {
  NOSTATE: 0,
  RUNNING: 1,
  PAUSED: 3,
  SHUTDOWN: 4,
  CRASHED: 6,
  SUSPENDED: 7,
} as const;
export type PowerState = (typeof PowerState)[keyof typeof PowerState];

/** The vm_states each action may start from (docs/nova-behaviour.md §1.2). */
export const ALLOWED_VM_STATES = {
  shelve: [VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED],
  shelveOffload: [VmState.SHELVED],
  unshelve: [VmState.SHELVED, VmState.SHELVED_OFFLOADED],
  // Nova deletes from any state; here not while another action holds the instance (its claim).
  delete: [
    VmState.ACTIVE,
    VmState.STOPPED,
    VmState.PAUSED,
    VmState.SUSPENDED,
    VmState.SHELVED,
    VmState.SHELVED_OFFLOADED,
    VmState.ERROR,
  ],
} as const satisfies Record<string, readonly VmState[]>;
export type InstanceAction = keyof typeof ALLOWED_VM_STATES;

/** The task_state an action claims the instance with (docs/nova-behaviour.md §1.3, §1.5, §1.6). */
export const CLAIM_TASK_STATE: Record<InstanceAction, TaskState> = {
  shelve: TaskState.SHELVING,
  shelveOffload: TaskState.SHELVING_OFFLOADING,
  unshelve: TaskState.UNSHELVING,
  delete: TaskState.DELETING,
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Instances, images, volumes and ports are named by UUIDs. */
export function isUuid(text: string): boolean {
  return UUID.test(text);
}

/** API status shown for a vm_state (docs/nova-behaviour.md §1.1). */
export function serverStatus(vmState: VmState): string {
  const byVmState: Record<VmState, string> = {
    building: 'BUILD',
    active: 'ACTIVE',
    stopped: 'SHUTOFF',
    paused: 'PAUSED',
    suspended: 'SUSPENDED',
    shelved: 'SHELVED',
    shelved_offloaded: 'SHELVED_OFFLOADED',
    error: 'ERROR',
    deleted: 'DELETED',
  };
  return byVmState[vmState];
}

export interface Flavor {
  flavorid: string;
  name: string;
  vcpus: number;
  memoryMb: number;
  rootGb: number;
  ephemeralGb: number;
  swap: number;
}

export interface Instance {
  uuid: string;
  displayName: string;
  projectId: string;
  userId: string;
  host: string | null;
  node: string | null;
  /** The zone of the host the instance is on now. */
  availabilityZone: string | null;
  /** The zone the instance is pinned to (Nova's RequestSpec.availability_zone); null for anywhere. */
  requestedAvailabilityZone: string | null;
  vmState: VmState;
  taskState: TaskState | null;
  powerState: PowerState;
  /** Glance id of the image the instance was built from; '' for a volume-backed instance. */
  imageRef: string;
  flavor: Flavor;
  launchedAt: string | null;
  createdAt: string;
  updatedAt: string;
  systemMetadata: Record<string, string>;
  blockDeviceMappings: BlockDeviceMapping[];
  ports: Port[];
}

/** A network port of an instance, with the MAC address the guest sees. */
export interface Port {
  id: string;
  /** The name of the port's network ('private'), as `addresses` keys it. */
  network: string;
  macAddress: string;
  /**
   * The port's fixed IPv4 address and its network's subnet, which a host serves it by DHCP;
   * null for a port recorded before networks were (its guest gets QEMU's user-mode network).
   */
  fixedIp: { address: string; networkId: string; cidr: string; gateway: string } | null;
  /** The host the port is bound to (Neutron's binding:host_id). */
  bindingHost: string | null;
}

/** A MAC address in the range OpenStack uses (fa:16:3e), its last three bytes from `hex`. */
export function macAddress(hex: string): string {
  const bytes = hex
    .replace(/[^0-9a-f]/gi, '')
    .slice(0, 6)
    .toLowerCase()
    .match(/../g)!;
  return ['fa', '16', '3e', ...bytes].join(':');
}

/** How one disk of an instance is backed (Nova's block device mapping). */
export interface BlockDeviceMapping {
  bootIndex: number | null;
  sourceType: 'image' | 'volume' | 'blank';
  destinationType: 'local' | 'volume';
  /** The image a volume was made from. */
  imageId: string | null;
  /** The volume's name in the storage pool, for destination_type volume. */
  volumeId: string | null;
  volumeSizeGb: number | null;
  deviceName: string;
}

/** The volume holding the instance's root disk, when it boots from one. */
export function rootVolume(instance: Pick<Instance, 'blockDeviceMappings'>): BlockDeviceMapping | undefined {
  return instance.blockDeviceMappings.find((bdm) => bdm.bootIndex === 0 && bdm.destinationType === 'volume');
}

/** system_metadata keys written at shelve and removed at unshelve (docs/nova-behaviour.md §2.1). */
export const SHELVE_METADATA_KEYS = [
  'shelved_at',
  'shelved_image_id',
  'shelved_host',
  'shelved_image_os_hash_algo',
  'shelved_image_os_hash_value',
] as const;

/** Nova's shelved_at format: naive UTC isoformat with microseconds, e.g. 2024-05-01T10:00:00.123000. */
export function shelvedAtTimestamp(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000');
}

/** Name of the snapshot image a shelve creates. */
export function shelvedImageName(instance: Pick<Instance, 'displayName'>): string {
  // Glance takes names of up to 255 characters, as Nova takes server names: the longest server
  // names give up their end, not their shelve. Glance also refuses characters of 4 bytes in UTF-8
  // (emoji, say), which Nova accepts in a server name: those become U+FFFD.
  const suffix = '-shelved';
  const characters = [...instance.displayName].map((character) => (character.length > 1 ? '\uFFFD' : character));
  return `${characters.slice(0, 255 - suffix.length).join('')}${suffix}`;
}

// system_metadata image_* keys that are not inherited by a snapshot (docs/nova-behaviour.md §2.3).
const NON_INHERITABLE_IMAGE_PROPERTIES = new Set([
  'mappings',
  'block_device_mapping',
  'cinder_encryption_key_id',
  'cinder_encryption_key_deletion_policy',
  'cache_in_nova',
  'bittorrent',
  // Glance's own columns, stored with the image_ prefix at build: not properties.
  'disk_format',
  'container_format',
  'min_ram',
  'min_disk',
]);

function inheritable(property: string): boolean {
  return (
    !NON_INHERITABLE_IMAGE_PROPERTIES.has(property) && !property.startsWith('img_') && !property.startsWith('os_glance')
  );
}

/**
 * The properties of the snapshot image a shelve uploads, as Nova sets them (docs/nova-behaviour.md §2.3): every
 * image_* system_metadata entry with the prefix stripped, the flavor as instance_type_*, and the
 * snapshot markers.
 */
export function snapshotImageProperties(instance: Instance): Record<string, string> {
  const properties: Record<string, string> = {};
  for (const [key, value] of Object.entries(instance.systemMetadata)) {
    if (!key.startsWith('image_')) continue;
    const property = key.slice('image_'.length);
    if (inheritable(property)) properties[property] = value;
  }
  const { flavor } = instance;
  Object.assign(properties, {
    instance_type_name: flavor.name,
    instance_type_flavorid: flavor.flavorid,
    instance_type_vcpus: String(flavor.vcpus),
    instance_type_memory_mb: String(flavor.memoryMb),
    instance_type_root_gb: String(flavor.rootGb),
    instance_type_ephemeral_gb: String(flavor.ephemeralGb),
    instance_type_swap: String(flavor.swap),
    instance_uuid: instance.uuid,
    user_id: instance.userId,
    owner_id: instance.projectId,
    image_type: 'snapshot',
    image_location: 'snapshot',
    image_state: 'available',
  });
  return properties;
}

// Glance's own fields of an image, which are not image properties.
const GLANCE_IMAGE_FIELDS = new Set([
  'id',
  'name',
  'status',
  'owner',
  'visibility',
  'protected',
  'os_hidden',
  'size',
  'virtual_size',
  'checksum',
  'os_hash_algo',
  'os_hash_value',
  'created_at',
  'updated_at',
  'tags',
  'self',
  'file',
  'schema',
  'stores',
  'locations',
  'direct_url',
]);

/**
 * The system_metadata Nova keeps of the image an instance was built from: its disk and container
 * formats, minimums and properties, each as `image_<name>` (docs/nova-behaviour.md §2.3).
 */
export function imageSystemMetadata(image: Record<string, unknown>): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(image)) {
    if (GLANCE_IMAGE_FIELDS.has(name) || value === null || value === undefined) continue;
    metadata[`image_${name}`] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  return metadata;
}
