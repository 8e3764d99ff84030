// Everything the bench makes outside its own folder (instances, libvirt domains, Glance images,
// compute hosts) is noted here when it is made and removed at the end, even after a failure.
import { rm } from 'node:fs/promises';
import type { WorkflowHandle } from '@temporalio/client';
import { DomainState } from '@unraid/libvirt';
import type { Pool } from 'pg';
import { removeDhcpHosts } from '../lib/host-network.js';
import { instanceDirectory } from '../lib/host-paths.js';
import { getInstance } from '../lib/db/instances.js';
import type { GlanceClient, RequestContext } from '../lib/glance.js';
import type { LibvirtConnection } from '../lib/libvirt.js';

export class Leftovers {
  private readonly instances = new Set<string>();
  private readonly domains = new Set<string>();
  /** Each image, with the project that owns it (a private image is its owner's to delete). */
  private readonly images = new Map<string, RequestContext>();
  private readonly workflows = new Set<WorkflowHandle>();
  /** Set once clearing starts (say, on Ctrl-C while the bench runs): nothing new may be made. */
  private closed = false;

  constructor(
    private readonly pool: Pool,
    private readonly glance: GlanceClient,
    private readonly owner: RequestContext,
    /** The libvirt that holds the bench's real domains (the test driver's die with their worker). */
    private readonly libvirt: LibvirtConnection,
    /** Each bench compute host's instances folder. */
    private readonly instancesPaths: Record<string, string>,
  ) {}

  private note<T>(set: Set<T>, item: T): void {
    if (this.closed) throw new Error('the bench is ending');
    set.add(item);
  }

  instance(uuid: string): void {
    this.note(this.instances, uuid);
  }

  domain(uuid: string): void {
    this.note(this.domains, uuid);
  }

  image(id: string, owner = this.owner): void {
    if (this.closed) throw new Error('the bench is ending');
    this.images.set(id, owner);
  }

  /** A compute host the bench started after this was made: its record and instances folder. */
  host(name: string, instancesPath: string): void {
    if (this.closed) throw new Error('the bench is ending');
    this.instancesPaths[name] = instancesPath;
  }

  /** A workflow until it has ended: one still running at the end is terminated. */
  async running<T>(handle: WorkflowHandle, result: Promise<T>): Promise<T> {
    if (this.closed) {
      // Its result is refused by the termination: nobody awaits it, and it must not crash the bench.
      result.catch(() => undefined);
      await handle.terminate('bench ended');
      throw new Error('the bench is ending');
    }
    this.workflows.add(handle);
    try {
      return await result;
    } finally {
      this.workflows.delete(handle);
    }
  }

  async removeDomain(uuid: string): Promise<void> {
    const domain = await this.libvirt.lookupInstance(uuid);
    if (domain) {
      if ((await domain.getInfo()).state !== DomainState.SHUTOFF) await domain.destroy();
      await removeDhcpHosts(this.libvirt.uri, await domain.getXMLDesc());
      await domain.undefine();
    }
    this.domains.delete(uuid);
  }

  async removeImage(id: string): Promise<void> {
    await this.glance.deleteImage(this.images.get(id) ?? this.owner, id);
    this.images.delete(id);
  }

  /** The instance's domain, files, shelve snapshot (if it is shelved) and record; each even if another fails. */
  async removeInstance(uuid: string): Promise<void> {
    const instance = await getInstance(this.pool, uuid).catch(() => null);
    const snapshot = instance?.systemMetadata.shelved_image_id;
    const folder = instance?.host ? this.instancesPaths[instance.host] : undefined;
    const results = await Promise.allSettled([
      snapshot ? this.glance.unprotectAndDelete(this.glance.snapshotContext, snapshot) : undefined,
      this.removeDomain(uuid),
      folder ? rm(instanceDirectory(folder, uuid), { recursive: true, force: true }) : undefined,
    ]);
    await this.pool.query('DELETE FROM instances WHERE uuid = $1', [uuid]);
    this.instances.delete(uuid);
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * Takes over what an earlier bench that was killed left: the instances of the bench's projects
   * (with their domains and snapshots) and the images of these names they own.
   */
  async adoptPrevious(
    imageNames: readonly string[],
    owners: readonly RequestContext[] = [this.owner],
  ): Promise<number> {
    const { rows } = await this.pool.query<{ uuid: string }>('SELECT uuid FROM instances WHERE project_id = ANY($1)', [
      owners.map((owner) => owner.projectId),
    ]);
    for (const { uuid } of rows) this.instance(uuid);
    let images = 0;
    for (const owner of owners) {
      for (const name of imageNames) {
        for (const image of await this.glance.listImages(owner, { name })) {
          if (image.owner === owner.projectId) {
            this.image(image.id, owner);
            images++;
          }
        }
      }
    }
    return rows.length + images;
  }

  /** Removes what is left, all at once; goes on past a failure, and reports them all at the end. */
  async clear(): Promise<void> {
    // First, so that no step of theirs runs while what they work on is removed.
    await this.terminateWorkflows();
    const results: PromiseSettledResult<unknown>[] = await Promise.allSettled([
      ...[...this.instances].map((uuid) => this.removeInstance(uuid)),
      ...[...this.domains].map((uuid) => this.removeDomain(uuid)),
    ]);
    results.push(
      ...(await Promise.allSettled([...this.images.keys()].map((id) => this.removeImage(id)))),
      ...(await Promise.allSettled([
        this.pool.query('DELETE FROM compute_nodes WHERE host = ANY($1)', [Object.keys(this.instancesPaths)]),
      ])),
    );
    const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
    if (failures.length > 0) throw new AggregateError(failures, 'the bench could not remove all it made');
  }

  /** From now on nothing new may be noted, so nothing new is made; ends the workflows still running. */
  async close(): Promise<void> {
    this.closed = true;
    await this.terminateWorkflows();
  }

  // One that ended meanwhile refuses, which is fine.
  private async terminateWorkflows(): Promise<void> {
    await Promise.all([...this.workflows].map((handle) => handle.terminate('bench ended').catch(() => undefined)));
  }
}
