// The main job, end to end on the local stack: a VM whose disk holds known random bytes is
// created, shelved and offloaded, then unshelved, and its disk is checked byte for byte.
// Run it with `npm run demo`, which starts the stack and the workers first.
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { instanceDirectory, rootDiskPath } from '../lib/host-paths.js';
import { type Action, startAction, watchAction } from '../lib/actions.js';
import { loadConfig } from '../lib/config.js';
import { connectClient } from '../lib/temporal-client.js';
import { GlanceClient } from '../lib/glance.js';
import { LibvirtConnection } from '../lib/libvirt.js';
import { type Instance, serverStatus } from '../lib/nova.js';
import { sameGuestContent } from '../lib/qemu-img.js';
import { createSampleDisk, uploadBootImage } from '../lib/sample-disk.js';
import { createPool } from '../lib/postgres.js';

const config = loadConfig();
const started = Date.now();
const print = (line: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${line}`);
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
  return watchAction(handle, pool, instanceUuid, ({ instance, progress }) => {
    const bytes =
      progress?.bytesDone !== undefined
        ? ` ${progress.step} ${(progress.bytesDone / MiB).toFixed(1)}/${((progress.bytesTotal ?? 0) / MiB).toFixed(1)} MiB`
        : progress
          ? ` (${progress.step})`
          : '';
    print(`  ${describe(instance)}${bytes}`);
  });
}

try {
  print('making a 64 MiB disk image with 32 MiB of random data');
  const disk = await createSampleDisk(path.join(path.dirname(config.compute.instancesPath), 'demo'), instanceUuid);
  const imageId = await uploadBootImage(glance, owner, disk.image, { id: randomUUID(), name: 'vm-shelve-demo' });
  print(`uploaded boot image ${imageId} to Glance`);

  let instance = await run('build', {
    instanceUuid,
    displayName: `demo-${instanceUuid.slice(0, 8)}`,
    ...owner,
    imageRef: imageId,
    flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
  });
  print(`built: ${describe(instance)}`);

  // The guest has no OS to honour the shutdown request, so the clean shutdown gives up after 3 s.
  instance = await run('shelve', { instanceUuid, shutdownTimeout: 3, shelvedOffloadTime: 0 });
  const shelvedImageId = instance.systemMetadata.shelved_image_id!;
  print(`shelved and offloaded: ${describe(instance)}`);
  print(
    `  shelved_at=${instance.systemMetadata.shelved_at} shelved_image_id=${shelvedImageId} shelved_host=${instance.systemMetadata.shelved_host}`,
  );
  check('domain gone from libvirt', (await libvirt.lookupInstance(instanceUuid)) === null);
  check(
    'instance files gone from the host',
    !existsSync(instanceDirectory(config.compute.instancesPath, instanceUuid)),
  );
  const snapshot = await glance.getImage(owner, shelvedImageId);
  check(
    `image ${shelvedImageId} active in Glance (${snapshot?.name}, ${snapshot?.size} bytes)`,
    snapshot?.status === 'active',
  );
  check(
    'image carries instance_uuid and image_type=snapshot',
    snapshot?.instance_uuid === instanceUuid && snapshot.image_type === 'snapshot',
  );

  instance = await run('unshelve', { instanceUuid });
  print(`unshelved: ${describe(instance)}`);
  const domain = await libvirt.lookupInstance(instanceUuid);
  check('domain running', domain !== null && instance.powerState === 1);
  check(`image ${shelvedImageId} deleted from Glance`, (await glance.getImage(owner, shelvedImageId)) === null);
  check(
    'shelve metadata cleared',
    !('shelved_image_id' in instance.systemMetadata) && !('shelved_at' in instance.systemMetadata),
  );
  check(
    'guest-visible disk bytes equal the original',
    await sameGuestContent(disk.reference, rootDiskPath(config.compute.instancesPath, instanceUuid)),
  );
  print(process.exitCode ? 'demo FAILED' : 'demo passed');
} finally {
  await Promise.all([pool.end(), connection.close(), libvirt.close()]);
}
