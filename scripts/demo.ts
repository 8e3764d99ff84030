// The main job, end to end on the local stack, with the project's test guest (docs/guest.md): a
// server is built on one host and its guest writes a file; it is shelved (the guest powers itself
// off), offloaded, and unshelved on a second host, where its guest answers at the same address and
// reads its file back. Run it with `npm run demo`, which starts the stack and the workers first.
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Client } from '@temporalio/client';
import { consoleLogPath, instanceDirectory } from '../lib/host-paths.js';
import { type Action, startAction, watchAction } from '../lib/actions.js';
import { loadConfig } from '../lib/config.js';
import { connectClient } from '../lib/temporal-client.js';
import { GlanceClient } from '../lib/glance.js';
import { connectGuest, guestImage, powerOffLine } from '../lib/guest-protocol.js';
import { domainStateReason, LibvirtConnection } from '../lib/libvirt.js';
import { type Instance, serverStatus } from '../lib/nova.js';
import { uploadBootImage } from '../lib/sample-disk.js';
import { createPool } from '../lib/postgres.js';
import { listInstances } from '../lib/db/instances.js';

const config = loadConfig();
/** The second compute host scripts/demo starts on the same libvirtd, with its own instances folder. */
const second = loadConfig({
  ...process.env,
  COMPUTE_HOST: process.env.DEMO_SECOND_HOST,
  INSTANCES_PATH: process.env.DEMO_SECOND_INSTANCES_PATH,
});
if (!process.env.DEMO_SECOND_HOST || second.compute.host === config.compute.host) {
  throw new Error('DEMO_SECOND_HOST must name a second compute host (scripts/demo starts one)');
}
const started = Date.now();
const print = (line: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}`);
const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
const MiB = 1024 * 1024;

function describe(instance: Instance): string {
  return (
    `${serverStatus(instance.vmState).padEnd(17)} vm_state=${instance.vmState} ` +
    `task_state=${instance.taskState ?? 'None'} power_state=${instance.powerState} host=${instance.host ?? 'None'}`
  );
}

function check(what: string, ok: boolean): void {
  print(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) process.exitCode = 1;
}

const pool = createPool(config.databaseUrl);
const glance = new GlanceClient(config.glance);
const libvirt = new LibvirtConnection(config.compute.libvirtUri);
const connection = await connectClient(config);
const client = new Client({ connection, namespace: config.temporal.namespace });
const owner = { projectId: 'demo-project', userId: 'demo-user' };
const instanceUuid = randomUUID();

async function run<A extends Action>(action: A, input: Parameters<typeof startAction<A>>[3]): Promise<Instance> {
  const handle = await startAction(client, config, action, input);
  print(
    `${action}: workflow ${handle.workflowId} started (Web UI: http://127.0.0.1:8233/namespaces/${config.temporal.namespace}/workflows/${handle.workflowId})`,
  );
  return watchAction(handle, pool, input.instanceUuid, ({ instance, progress }) => {
    const bytes =
      progress?.bytesDone !== undefined
        ? ` ${progress.step} ${(progress.bytesDone / MiB).toFixed(1)}/${((progress.bytesTotal ?? 0) / MiB).toFixed(1)} MiB`
        : progress
          ? ` (${progress.step})`
          : '';
    print(`  ${describe(instance)}${bytes}`);
  });
}

const imageId = randomUUID();
try {
  // The server an earlier demo left on these hosts goes first: demos do not pile up guests. One on
  // other hosts (a test's) is left to its own hosts.
  const hosts = [config.compute.host, second.compute.host, null];
  for (const earlier of await listInstances(pool, owner.projectId)) {
    if (!hosts.includes(earlier.host)) continue;
    print(`deleting server ${earlier.uuid}, which an earlier demo left`);
    await run('delete', { instanceUuid: earlier.uuid });
  }
  const image = await guestImage();
  await uploadBootImage(glance, owner, image, { id: imageId, name: 'vm-shelve-guest' });
  print(`uploaded the test guest (${image}) to Glance as image ${imageId}`);

  let instance = await run('build', {
    instanceUuid,
    displayName: `demo-${instanceUuid.slice(0, 8)}`,
    ...owner,
    imageRef: imageId,
    flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 256, rootGb: 1, ephemeralGb: 0, swap: 0 },
    host: config.compute.host,
  });
  const address = instance.ports[0]?.fixedIp?.address;
  if (!address) throw new Error(`instance ${instanceUuid} has no fixed IP`);
  print(`built: ${describe(instance)} address=${address}`);

  let since = Date.now();
  let guest = await connectGuest(address, 120_000);
  check(`the guest answers at ${address}, ${seconds(since)} after ACTIVE`, (await guest.ping()) === address);
  const content = randomBytes(64 * 1024);
  const written = await guest.write('demo.bin', content);
  guest.close();
  print(`the guest wrote /data/demo.bin (64 KiB of random bytes, sha256 ${written.slice(0, 16)}…) and synced it`);

  // Shelve alone first, so that the guest's power-off can be seen on the host before the offload.
  since = Date.now();
  instance = await run('shelve', { instanceUuid, shelvedOffloadTime: -1 });
  const shelvedImageId = instance.systemMetadata.shelved_image_id!;
  print(`shelved in ${seconds(since)}: ${describe(instance)}`);
  print(
    `  shelved_at=${instance.systemMetadata.shelved_at} shelved_image_id=${shelvedImageId} shelved_host=${instance.systemMetadata.shelved_host}`,
  );
  const consoleLog = await readFile(consoleLogPath(config.compute.instancesPath, instanceUuid), 'utf8');
  check(
    `the guest powered itself off: its console log ends with 'vm-shelve-guest power-off'`,
    consoleLog.split(/\r?\n/).some((line) => powerOffLine.test(line)),
  );
  const state = await domainStateReason(config.compute.libvirtUri, instanceUuid);
  check(`libvirt says '${state}', not 'shut off (destroyed)'`, state === 'shut off (shutdown)');
  const snapshot = await glance.getImage(owner, shelvedImageId);
  check(
    `image ${shelvedImageId} active in Glance (${snapshot?.name}, ${snapshot?.size} bytes)`,
    snapshot?.status === 'active',
  );
  check(
    'image carries instance_uuid and image_type=snapshot',
    snapshot?.instance_uuid === instanceUuid && snapshot.image_type === 'snapshot',
  );

  instance = await run('shelveOffload', { instanceUuid });
  print(`offloaded: ${describe(instance)}`);
  check(`domain gone from libvirt`, (await libvirt.lookupInstance(instanceUuid)) === null);
  check(
    `instance files gone from host ${config.compute.host}`,
    !existsSync(instanceDirectory(config.compute.instancesPath, instanceUuid)),
  );

  since = Date.now();
  instance = await run('unshelve', { instanceUuid, host: second.compute.host });
  print(`unshelved on host ${second.compute.host} in ${seconds(since)}: ${describe(instance)}`);
  check(`same address ${address}`, instance.ports[0]?.fixedIp?.address === address);
  const active = Date.now();
  guest = await connectGuest(address, 120_000);
  check(
    `the guest answers at ${address} again, ${seconds(active)} after ACTIVE (${seconds(since)} after the request)`,
    (await guest.ping()) === address,
  );
  const readBack = await guest.read('demo.bin');
  guest.close();
  check('the guest read /data/demo.bin back, byte for byte', readBack !== null && readBack.equals(content));
  check(`image ${shelvedImageId} deleted from Glance`, (await glance.getImage(owner, shelvedImageId)) === null);
  check(
    'shelve metadata cleared',
    !('shelved_image_id' in instance.systemMetadata) && !('shelved_at' in instance.systemMetadata),
  );
  print(process.exitCode ? 'demo FAILED' : 'demo passed');
  print(
    `server ${instanceUuid} stays running on host ${second.compute.host} at ${address} ` +
      `(virsh -c ${config.compute.libvirtUri} list); its console log: ${consoleLogPath(second.compute.instancesPath, instanceUuid)}`,
  );
} finally {
  // The server no longer needs its boot image: an unshelve spawns from the shelve snapshot.
  await glance.deleteImage(owner, imageId).catch(() => undefined);
  await Promise.all([pool.end(), connection.close(), libvirt.close()]);
}
