// Activities of a compute host: its libvirt domains and the disks under its instances path.
// They run only on that host's worker (task queue compute@<host>). Each one is idempotent: a
// retry after a crash finds its own half-done work and finishes it. The steps live beside this
// file by what they do (power, snapshot, spawn with image-download, removal); heartbeat.ts is how
// each runs on the worker.
import type { Config } from '../../lib/config.js';
import type { GlanceClient } from '../../lib/glance.js';
import type { LibvirtConnection } from '../../lib/libvirt.js';
import type { Instance } from '../../lib/nova.js';
import { computeActivities } from './heartbeat.js';
import * as power from './power.js';
import * as removal from './removal.js';
import type { ComputeServices } from './services.js';
import * as snapshot from './snapshot.js';
import * as spawn from './spawn.js';

export function createComputeActivities(config: Config['compute'], libvirt: LibvirtConnection, glance: GlanceClient) {
  const services: ComputeServices = { config, libvirt, glance };
  // Workflows call these by name with one object argument, and histories record both: keep them.
  // Methods, whose parameters are checked bivariantly: the tests' stubs of ComputeActivities rely on it.
  return computeActivities(config.host, {
    powerOffInstance(input: { instanceUuid: string; timeout: number }) {
      return power.powerOffInstance(services, input);
    },
    snapshotInstance(input: { instance: Instance; imageId: string }) {
      return snapshot.snapshotInstance(services, input);
    },
    destroyInstance(input: { instanceUuid: string }) {
      return removal.destroyInstance(services, input);
    },
    spawnInstance(input: spawn.SpawnRequest) {
      return spawn.spawnInstance(services, input);
    },
    powerOnInstance(input: { instanceUuid: string }) {
      return power.powerOnInstance(services, input);
    },
    listInstancePowerStates() {
      return power.listInstancePowerStates(services);
    },
  });
}

export type ComputeActivities = ReturnType<typeof createComputeActivities>;
