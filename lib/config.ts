// All configuration, read once from the environment. Defaults point at the local stack that
// scripts/stack starts; each can be pointed at an existing deployment instead (docs/stack.md).
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeHashAlgorithm } from './image-hash.js';
import type { KeystoneCredentials } from './keystone-session.js';
import { type TemporalTls, type Secret, temporalSecurity } from './temporal-connection.js';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface Config {
  temporal: {
    address: string;
    namespace: string;
    /** Task queue of the conductor worker (workflows, database and image activities). */
    conductorTaskQueue: string;
    /**
     * TLS to the frontend (TEMPORAL_TLS, TEMPORAL_TLS_CA, TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY,
     * TEMPORAL_TLS_SERVER_NAME), or false for plaintext; files are read at load.
     */
    tls: TemporalTls | false;
    /** TEMPORAL_API_KEY, sent as a bearer token; implies TLS unless TEMPORAL_TLS=false. */
    apiKey: Secret<string> | undefined;
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
    /**
     * How Glance knows who calls (GLANCE_AUTH): `none`, a no-auth Glance that trusts the X-Roles
     * and X-Tenant-Id headers; or `keystone`, tokens of service credentials, which a Keystone
     * session renews (lib/keystone-session.ts).
     */
    auth: { kind: 'none' } | { kind: 'keystone'; keystoneUrl: string; credentials: KeystoneCredentials };
    /**
     * The project that owns shelve snapshots (GLANCE_SNAPSHOT_PROJECT), so that no tenant can
     * upload into or delete one. With Keystone, the service credentials' project.
     */
    snapshotProject: string;
    /** Glance's `hashing_algorithm` (GLANCE_HASHING_ALGORITHM): uploads are hashed the same way. */
    hashingAlgorithm: string;
  };
  compute: {
    /** This hypervisor host's name, Nova's CONF.host. */
    host: string;
    availabilityZone: string;
    libvirtUri: string;
    /** libvirt domain type (LIBVIRT_VIRT_TYPE): kvm where KVM can run a guest kernel, else qemu (TCG). */
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
  /**
   * Seconds the host chosen for a build or an unshelve has to take the spawn before another host
   * is tried (Nova's alternates), at most three hosts in all.
   */
  spawnStartTimeout: number;
  /**
   * Seconds between two runs of the reconciler's Temporal Schedule (RECONCILE_INTERVAL); 0 makes
   * the conductor leave the schedule alone (none made, an existing one unchanged).
   */
  reconcileInterval: number;
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

/**
 * KVM where /dev/kvm opens, but not under the kvm_pvm module (nested sandboxes): its KVM runs a
 * BIOS but hangs a guest kernel (docs/guest.md), so TCG it is there.
 */
function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return false;
  }
  return !existsSync('/sys/module/kvm_pvm');
}

function virtType(env: NodeJS.ProcessEnv): 'kvm' | 'qemu' {
  const raw = env.LIBVIRT_VIRT_TYPE || (kvmUsable() ? 'kvm' : 'qemu');
  if (raw !== 'kvm' && raw !== 'qemu') throw new Error(`LIBVIRT_VIRT_TYPE must be kvm or qemu, got '${raw}'`);
  return raw;
}

/** KEYSTONE_URL, which `setting` (e.g. AUTH_STRATEGY=keystone) needs: Keystone's v3 endpoint. */
function keystoneV3Url(env: NodeJS.ProcessEnv, setting: string): string {
  const raw = env.KEYSTONE_URL;
  if (!raw) throw new Error(`${setting} needs KEYSTONE_URL, e.g. http://127.0.0.1:5000/v3`);
  const keystoneUrl = raw.replace(/\/+$/, '');
  if (!URL.canParse(keystoneUrl) || !/^https?:$/.test(new URL(keystoneUrl).protocol) || !keystoneUrl.endsWith('/v3')) {
    throw new Error(`KEYSTONE_URL must be Keystone's v3 endpoint, e.g. http://127.0.0.1:5000/v3, got '${raw}'`);
  }
  return keystoneUrl;
}

function auth(env: NodeJS.ProcessEnv): Config['auth'] {
  const strategy = env.AUTH_STRATEGY || 'noauth2';
  if (strategy === 'noauth2') return { strategy };
  if (strategy !== 'keystone') throw new Error(`AUTH_STRATEGY must be noauth2 or keystone, got '${strategy}'`);
  return { strategy, keystoneUrl: keystoneV3Url(env, 'AUTH_STRATEGY=keystone') };
}

function hashingAlgorithm(env: NodeJS.ProcessEnv): string {
  const name = env.GLANCE_HASHING_ALGORITHM || 'sha512';
  try {
    nodeHashAlgorithm(name);
  } catch {
    throw new Error(`GLANCE_HASHING_ALGORITHM must be a hash algorithm Glance and Node both know, got '${name}'`);
  }
  return name;
}

/** Glance's authentication; errors name the variables, never a value that may be a secret. */
function glanceAuth(env: NodeJS.ProcessEnv): Config['glance']['auth'] {
  if (env.GLANCE_AUTH_TOKEN) {
    throw new Error(
      'GLANCE_AUTH_TOKEN is no longer read (a static token expires): set GLANCE_AUTH=keystone and service credentials',
    );
  }
  const kind = env.GLANCE_AUTH || 'none';
  if (kind === 'none') return { kind };
  if (kind !== 'keystone') throw new Error(`GLANCE_AUTH must be none or keystone, got '${kind}'`);
  const keystoneUrl = keystoneV3Url(env, 'GLANCE_AUTH=keystone');
  const set = (names: string[]) => names.filter((name) => env[name]);
  const applicationCredential = ['GLANCE_APPLICATION_CREDENTIAL_ID', 'GLANCE_APPLICATION_CREDENTIAL_SECRET'];
  const password = ['GLANCE_SERVICE_USERNAME', 'GLANCE_SERVICE_PASSWORD', 'GLANCE_SERVICE_PROJECT'];
  if (set(applicationCredential).length > 0) {
    if (set(password).length > 0) {
      throw new Error(
        `GLANCE_AUTH=keystone takes an application credential or a password, not both: unset ${set(password).join(', ')}`,
      );
    }
    const missing = applicationCredential.filter((name) => !env[name]);
    if (missing.length > 0) throw new Error(`GLANCE_AUTH=keystone needs ${missing.join(' and ')} too`);
    return {
      kind,
      keystoneUrl,
      credentials: {
        kind: 'applicationCredential',
        id: env.GLANCE_APPLICATION_CREDENTIAL_ID!,
        secret: env.GLANCE_APPLICATION_CREDENTIAL_SECRET!,
      },
    };
  }
  const missing = password.filter((name) => !env[name]);
  if (missing.length > 0) {
    throw new Error(
      `GLANCE_AUTH=keystone needs ${password.join(', ')} (or ${applicationCredential.join(' and ')}); missing: ${missing.join(', ')}`,
    );
  }
  return {
    kind,
    keystoneUrl,
    credentials: {
      kind: 'password',
      userName: env.GLANCE_SERVICE_USERNAME!,
      password: env.GLANCE_SERVICE_PASSWORD!,
      projectName: env.GLANCE_SERVICE_PROJECT!,
      userDomain: env.GLANCE_SERVICE_USER_DOMAIN || 'Default',
      projectDomain: env.GLANCE_SERVICE_PROJECT_DOMAIN || 'Default',
    },
  };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    temporal: {
      address: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
      namespace: env.TEMPORAL_NAMESPACE ?? 'default',
      conductorTaskQueue: env.CONDUCTOR_TASK_QUEUE ?? 'shelve',
      ...temporalSecurity(env),
    },
    databaseUrl: env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/vm_shelve',
    api: { host: env.API_HOST ?? '127.0.0.1', port: integer(env, 'API_PORT', 8774, 0) },
    auth: auth(env),
    glance: {
      url: (env.GLANCE_URL ?? 'http://127.0.0.1:9292').replace(/\/+$/, ''),
      auth: glanceAuth(env),
      snapshotProject: env.GLANCE_SNAPSHOT_PROJECT || 'vm-shelve-service',
      hashingAlgorithm: hashingAlgorithm(env),
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
    spawnStartTimeout: integer(env, 'SPAWN_START_TIMEOUT', 30, 1),
    reconcileInterval: integer(env, 'RECONCILE_INTERVAL', 60, 0),
    logLevel: env.LOG_LEVEL ?? 'info',
    metricsPort: integer(env, 'METRICS_PORT', 0, 0),
  };
}
