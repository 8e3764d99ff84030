// The conductor's configuration, read by workflows that were given no value of their own
// (workflows cannot read the environment).
import type { Config } from '../lib/config.js';

export interface ConductorSettings {
  shutdownTimeout: number;
  shelvedOffloadTime: number;
  computeHostTimeout: number;
  spawnStartTimeout: number;
}

export function createSettingsActivities(config: Config) {
  return {
    async conductorSettings(): Promise<ConductorSettings> {
      return {
        shutdownTimeout: config.shutdownTimeout,
        shelvedOffloadTime: config.shelvedOffloadTime,
        computeHostTimeout: config.computeHostTimeout,
        spawnStartTimeout: config.spawnStartTimeout,
      };
    },
  };
}

export type SettingsActivities = ReturnType<typeof createSettingsActivities>;
