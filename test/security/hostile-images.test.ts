// Images as a hostile tenant makes them, each tried where the project reads an image: at build
// through the API, as the source of a new volume, and as a tampered shelve snapshot at unshelve.
// Every one is refused with its reason, nothing is left behind, and the bytes of a host file the
// images name reach no disk, image or log.
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { buildApi } from '../../api/server.js';
import { startAction } from '../../lib/actions.js';
import type { Instance } from '../../lib/nova.js';
import { failureMessages, stackDir } from '../support/faults.js';
import { buildKnownVm, e2eOwner, type KnownVm } from '../support/known-vm.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const run = promisify(execFile);

interface HostileImage {
  name: string;
  file: string;
  /** The disk_format the tenant claims in Glance. */
  diskFormat: string;
  /** What the refusal must say. */
  why: RegExp;
}

describe('hostile images', () => {
  let stack: TestStack;
  let api: FastifyInstance;
  let dir: string;
  /** A host file no tenant may read: its bytes hold `marker`, its path does not. */
  let secret: string;
  const marker = `host-secret-${randomBytes(12).toString('hex')}`;
  const corpus: HostileImage[] = [];
  const uploaded: string[] = [];
  const token = `${e2eOwner.userId}:${e2eOwner.projectId}`;

  async function image(name: string, diskFormat: string, why: RegExp, make: (file: string) => Promise<void>) {
    const file = path.join(dir, name);
    await make(file);
    corpus.push({ name, file, diskFormat, why });
  }

  async function upload(hostile: HostileImage): Promise<string> {
    const id = randomUUID();
    uploaded.push(id);
    await stack.glance.createImage(e2eOwner, {
      id,
      name: `hostile-${hostile.name}`,
      owner: e2eOwner.projectId,
      visibility: 'private',
      disk_format: hostile.diskFormat,
      container_format: 'bare',
    });
    const { size } = await stat(hostile.file);
    await stack.glance.uploadImageData(e2eOwner, id, createReadStream(hostile.file), size);
    return id;
  }

  /** The host file's bytes reached no disk, image or log: checked by each case after its own images. */
  async function expectSecretNowhere(): Promise<void> {
    const places = [
      stack.config.compute.instancesPath,
      stack.config.compute.volumePool.path,
      path.join(stackDir, 'glance', 'images'),
      path.join(stackDir, 'logs'),
    ];
    const found = await run('grep', ['-rlF', '--', marker, ...places.filter((place) => existsSync(place))]).then(
      ({ stdout }) => stdout.trim(),
      (error: { code?: number; stdout?: string }) => {
        if (error.code === 1) return '';
        throw error;
      },
    );
    expect(found, "files holding the host file's bytes").toBe('');
  }

  beforeAll(async () => {
    stack = await startTestStack();
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    dir = await mkdtemp(path.join(tmpdir(), 'vm-shelve-hostile-'));
    secret = path.join(dir, 'host-file');
    await writeFile(secret, Buffer.from(`${marker}\n`.repeat(64 * 1024)));
    await chmod(secret, 0o600);
    const dataFile = path.join(dir, 'data-file');

    await image('vmdk-flat-extent', 'qcow2', /not a qcow2|vmdk/i, (file) =>
      writeFile(
        file,
        [
          '# Disk DescriptorFile',
          'version=1',
          'CID=fffffffe',
          'parentCID=ffffffff',
          'createType="monolithicFlat"',
          `RW ${(64 * 1024 * 1024) / 512} FLAT "${secret}" 0`,
          'ddb.virtualHWVersion = "4"',
          '',
        ].join('\n'),
      ),
    );
    await image('qcow2-backing-file', 'qcow2', /backing file/i, (file) =>
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', secret, '-F', 'raw', file, '64M']).then(() => undefined),
    );
    await image('qcow2-data-file', 'qcow2', /data file/i, async (file) => {
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${dataFile}`, file, '64M']);
      await writeFile(dataFile, Buffer.from(`${marker}\n`.repeat(64 * 1024)));
    });
    await image('raw-holding-qcow2', 'raw', /not a raw|qcow2/i, (file) =>
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', secret, '-F', 'raw', file, '64M']).then(() => undefined),
    );
    await image('qcow2-of-1-pib', 'qcow2', /virtual size|larger/i, (file) =>
      run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1P']).then(() => undefined),
    );
    await image('raw-labelled-qcow2', 'qcow2', /not a qcow2|raw/i, (file) => writeFile(file, randomBytes(1024 * 1024)));
    await image('vmdk-sparse', 'vmdk', /not supported|vmdk/i, (file) =>
      run('qemu-img', ['create', '-q', '-f', 'vmdk', file, '64M']).then(() => undefined),
    );
  }, 120_000);

  afterAll(async () => {
    await api?.close();
    for (const id of uploaded) await stack.glance.deleteImage(e2eOwner, id).catch(() => undefined);
    await stack?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('are each refused at build with a 400 that names the problem, and no server is made', async () => {
    for (const hostile of corpus) {
      const imageId = await upload(hostile);
      const response = await api.inject({
        method: 'POST',
        url: '/v2.1/servers',
        headers: { 'x-auth-token': token, 'content-type': 'application/json' },
        payload: JSON.stringify({ server: { name: `hostile-${hostile.name}`, imageRef: imageId, flavorRef: '1' } }),
      });
      expect(response.statusCode, `${hostile.name}: ${response.body}`).toBe(400);
      const { message } = response.json().badRequest as { message: string };
      expect(message, hostile.name).toContain(`Image ${imageId} is not a valid ${hostile.diskFormat} image: `);
      expect(message, hostile.name).toMatch(hostile.why);
      const { rows } = await stack.pool.query('SELECT 1 FROM instances WHERE image_ref = $1', [imageId]);
      expect(rows, hostile.name).toEqual([]);
    }
    await expectSecretNowhere();
  });

  it('are each refused as the source of a new volume, with nothing left in the pool or the cache', async () => {
    for (const hostile of corpus) {
      const imageId = await upload(hostile);
      const instanceUuid = randomUUID();
      const volumeSizeGb = 1;
      const handle = await startAction(stack.client, stack.config, 'build', {
        instanceUuid,
        displayName: `hostile-volume-${hostile.name}`,
        ...e2eOwner,
        imageRef: imageId,
        flavor: { flavorid: '1', name: 'm1.tiny', vcpus: 1, memoryMb: 128, rootGb: 1, ephemeralGb: 0, swap: 0 },
        host: stack.config.compute.host,
        bootVolume: { sizeGb: volumeSizeGb },
      });
      const failure = await handle.result().then(
        () => null,
        (error: unknown) => error,
      );
      expect(failure, hostile.name).toBeInstanceOf(WorkflowFailedError);
      const message = failureMessages(failure);
      expect(message, hostile.name).toContain(`Image ${imageId} is not a valid ${hostile.diskFormat} image: `);
      expect(message, hostile.name).toMatch(hostile.why);
      const instance = await getInstance(stack.pool, instanceUuid);
      expect(instance.vmState, hostile.name).toBe('error');
      const volumeId = instance.blockDeviceMappings[0]!.volumeId!;
      const pool = await readdir(stack.config.compute.volumePool.path);
      expect(
        pool.filter((file) => file.includes(volumeId)),
        hostile.name,
      ).toEqual([]);
      const cache = await readdir(path.join(stack.config.compute.instancesPath, '_base')).catch(() => []);
      expect(
        cache.filter((file) => file.startsWith(imageId)),
        hostile.name,
      ).toEqual([]);
      await stack.pool.query('DELETE FROM instances WHERE uuid = $1', [instanceUuid]);
    }
    await expectSecretNowhere();
  });

  describe('as a shelve snapshot replaced behind the service, at unshelve', () => {
    let vm: KnownVm;

    // Each case finds the VM ACTIVE and leaves it so: a case that needs it offloaded shelves it,
    // and unshelves it from its own snapshot at the end.
    beforeAll(async () => {
      vm = await buildKnownVm(stack, stack.config.compute.host);
    }, 300_000);

    afterAll(async () => {
      await vm?.remove();
    });

    /** Points the instance at another image, as someone with Glance and database access could. */
    async function replaceSnapshot(imageId: string, hash: string | null) {
      const set = async (key: string, value: string) =>
        stack.pool.query(
          `INSERT INTO instance_system_metadata (instance_uuid, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (instance_uuid, key) DO UPDATE SET value = EXCLUDED.value`,
          [vm.instanceUuid, key, value],
        );
      await set('shelved_image_id', imageId);
      if (hash !== null) await set('shelved_image_os_hash_value', hash);
    }

    /** Shelves and offloads the VM; returns the metadata that names its own snapshot. */
    async function offload(): Promise<Record<string, string>> {
      const handle = await startAction(stack.client, stack.config, 'shelve', {
        instanceUuid: vm.instanceUuid,
        shutdownTimeout: 0,
        shelvedOffloadTime: 0,
      });
      expect(await handle.result(), 'the shelve').toMatchObject({ vmState: 'shelved_offloaded' });
      return (await getInstance(stack.pool, vm.instanceUuid)).systemMetadata;
    }

    /** With its own snapshot back, the instance unshelves with its bytes. */
    async function unshelveFromOwnSnapshot(original: Record<string, string>): Promise<void> {
      await replaceSnapshot(original.shelved_image_id!, original.shelved_image_os_hash_value!);
      const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
      expect((await handle.result()) as Instance, 'the unshelve from its own snapshot').toMatchObject({
        vmState: 'active',
      });
      expect(await vm.diskIsIntact(stack.config), 'the disk after the unshelve').toBe(true);
    }

    async function unshelveFailure(): Promise<string> {
      const handle = await startAction(stack.client, stack.config, 'unshelve', { instanceUuid: vm.instanceUuid });
      const failure = await handle.result().then(
        () => null,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(WorkflowFailedError);
      return failureMessages(failure);
    }

    it('refuses an image whose hash is not the one the shelve recorded', async () => {
      const original = await offload();
      const imageId = await upload(corpus.find((hostile) => hostile.name === 'raw-labelled-qcow2')!);
      await replaceSnapshot(imageId, null);
      expect(await unshelveFailure()).toMatch(new RegExp(`Image ${imageId} failed verification: .*the shelve stored`));
      const instance = await getInstance(stack.pool, vm.instanceUuid);
      expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
      expect(existsSync(path.join(stack.config.compute.instancesPath, vm.instanceUuid))).toBe(false);
      await unshelveFromOwnSnapshot(original);
      await expectSecretNowhere();
    });

    it('refuses each hostile image even with its own hash recorded, and leaves the instance offloaded', async () => {
      const original = await offload();
      for (const hostile of corpus) {
        const imageId = await upload(hostile);
        const { os_hash_value: hash } = (await stack.glance.getImage(e2eOwner, imageId))!;
        await replaceSnapshot(imageId, hash);
        const message = await unshelveFailure();
        expect(message, hostile.name).toContain(`Image ${imageId} is not a valid ${hostile.diskFormat} image: `);
        expect(message, hostile.name).toMatch(hostile.why);
        const instance = await getInstance(stack.pool, vm.instanceUuid);
        expect(instance, hostile.name).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
        expect(existsSync(path.join(stack.config.compute.instancesPath, vm.instanceUuid)), hostile.name).toBe(false);
      }
      await unshelveFromOwnSnapshot(original);
      await expectSecretNowhere();
    });

    it("runs the guest's QEMU as the unprivileged libvirt-qemu user, its files its owner's alone", async () => {
      const { stdout } = await run('pgrep', ['-f', `guest=instance-${vm.instanceUuid}`]);
      const pid = stdout.trim().split('\n')[0]!;
      expect((await run('ps', ['-o', 'user=', '-p', pid])).stdout.trim()).toBe('libvirt-qemu');
      const disk = path.join(stack.config.compute.instancesPath, vm.instanceUuid, 'disk');
      // Lent to the guest's QEMU while it runs, never readable by others.
      expect((await run('stat', ['-c', '%a %U', disk])).stdout.trim()).toBe('600 libvirt-qemu');
      const base = path.join(stack.config.compute.instancesPath, '_base', vm.bootImageId);
      expect((await run('stat', ['-c', '%a', base])).stdout.trim()).toBe('600');
    });
  });
});
