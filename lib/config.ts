// All configuration, read once from the environment. Defaults point at the local stack that
// scripts/stack starts; each can be pointed at an existing deployment instead (README).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface Config {
  temporal: {
    address: string;
    namespace: string;
    /** Task queue of the conductor worker (workflows, database and image activities). */
    conductorTaskQueue: string;
  };
  databaseUrl: string;
  /** Where the HTTP API listens (Nova's compute API port by default). */
  api: { host: string; port: number };
  /**
   * How the API knows who is asking (Nova's [api] auth_strategy): noauth2 trusts "user:project"
   * tokens, so it serves loopback only; keystone validates tokens with Keystone's v3 endpoint.
   */
  auth: { strategy: 'noauth2' } | { strategy: 'keystone'; keystoneUrl: string };
  glance: {
    url: string;
    /** A Keystone token for a Keystone-protected Glance; without one, Glance must run no-auth. */
    authToken: string | undefined;
  };
  compute: {
    /** This hypervisor host's name, Nova's CONF.host. */
    host: string;
    availabilityZone: string;
    libvirtUri: string;
    /** libvirt domain type: kvm where /dev/kvm exists, else qemu (TCG). */
    virtType: 'kvm' | 'qemu';
    /** Where instance folders (disks) and the image cache (_base) live on this host. */
    instancesPath: string;
    /**
     * The libvirt directory pool holding volumes (root disks of volume-backed instances). It
     * outlives domains; hosts that are to re-attach each other's volumes share its folder.
     */
    volumePool: { name: string; path: string };
    /** Overcommit this host allows the scheduler (Nova's initial allocation ratios). */
    cpuAllocationRatio: number;
    ramAllocationRatio: number;
    diskAllocationRatio: number;
  };
  /** Seconds to wait for a clean guest shutdown before destroying the domain (Nova: 60). */
  shutdownTimeout: number;
  /** -1 never offload, 0 offload at once, N > 0 offload after N seconds (Nova: 0). */
  shelvedOffloadTime: number;
  /**
   * Seconds a compute host's worker has to take a step before the action fails cleanly: an
   * action on a host whose worker is gone waits that long, not forever (Nova waits forever).
   */
  computeHostTimeout: number;
  logLevel: string;
  /** Port of a worker's own /metrics endpoint, on loopback; 0 (the default) serves none. */
  metricsPort: number;
}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`${name} must be an integer >= ${min}, got '${raw}'`);
  }
  return value;
}

function ratio(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a number > 0, got '${raw}'`);
  return value;
}

/** libvirt pool names are global to the host: the default one is named after its folder. */
function volumePool(env: NodeJS.ProcessEnv): { name: string; path: string } {
  const folder = path.resolve(env.VOLUMES_PATH ?? path.join(repoDir, '.stack', 'volumes'));
  const name = env.VOLUME_POOL ?? `vm-shelve-volumes-${createHash('sha256').update(folder).digest('hex').slice(0, 8)}`;
  return { name, path: folder };
}

function virtType(env: NodeJS.ProcessEnv): 'kvm' | 'qemu' {
  const raw = env.LIBVIRT_VIRT_TYPE ?? (existsSync('/dev/kvm') ? 'kvm' : 'qemu');
  if (raw !== 'kvm' && raw !== 'qemu') throw new Error(`LIBVIRT_VIRT_TYPE must be kvm or qemu, got '${raw}'`);
  return raw;
}

function auth(env: NodeJS.ProcessEnv): Config['auth'] {
  const strategy = env.AUTH_STRATEGY || 'noauth2';
  if (strategy === 'noauth2') return { strategy };
  if (strategy !== 'keystone') throw new Error(`AUTH_STRATEGY must be noauth2 or keystone, got '${strategy}'`);
  const raw = env.KEYSTONE_URL;
  if (!raw) throw new Error('AUTH_STRATEGY=keystone needs KEYSTONE_URL, e.g. http://127.0.0.1:5000/v3');
  const keystoneUrl = raw.replace(/\/+$/, '');
  if (!URL.canParse(keystoneUrl) || !/^https?:$/.test(new URL(keystoneUrl).protocol) || !keystoneUrl.endsWith('/v3')) {
    throw new Error(`KEYSTONE_URL must be Keystone's v3 endpoint, e.g. http://127.0.0.1:5000/v3, got '${raw}'`);
  }
  return { strategy, keystoneUrl };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    temporal: {
      address: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
      namespace: env.TEMPORAL_NAMESPACE ?? 'default',
      conductorTaskQueue: env.CONDUCTOR_TASK_QUEUE ?? 'shelve',
    },
    databaseUrl: env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/vm_shelve',
    api: { host: env.API_HOST ?? '127.0.0.1', port: integer(env, 'API_PORT', 8774, 0) },
    auth: auth(env),
    glance: {
      url: (env.GLANCE_URL ?? 'http://127.0.0.1:9292').replace(/\/+$/, ''),
      authToken: env.GLANCE_AUTH_TOKEN || undefined,
    },
    compute: {
      host: env.COMPUTE_HOST ?? hostname(),
      availabilityZone: env.AVAILABILITY_ZONE ?? 'nova',
      libvirtUri: env.LIBVIRT_URI ?? 'qemu:///system',
      virtType: virtType(env),
      instancesPath: path.resolve(env.INSTANCES_PATH ?? path.join(repoDir, '.stack', 'instances')),
      volumePool: volumePool(env),
      cpuAllocationRatio: ratio(env, 'CPU_ALLOCATION_RATIO', 4.0),
      ramAllocationRatio: ratio(env, 'RAM_ALLOCATION_RATIO', 1.0),
      diskAllocationRatio: ratio(env, 'DISK_ALLOCATION_RATIO', 1.0),
    },
    shutdownTimeout: integer(env, 'SHUTDOWN_TIMEOUT', 60, 0),
    shelvedOffloadTime: integer(env, 'SHELVED_OFFLOAD_TIME', 0, -1),
    computeHostTimeout: integer(env, 'COMPUTE_HOST_TIMEOUT', 300, 1),
    logLevel: env.LOG_LEVEL ?? 'info',
    metricsPort: integer(env, 'METRICS_PORT', 0, 0),
  };
}
