// The conductor's configuration, read by workflows that were given no value of their own
// (workflows cannot read the environment).
import type { Config } from '../lib/config.js';

export interface ShelveSettings {
  shutdownTimeout: number;
  shelvedOffloadTime: number;
}

export function createSettingsActivities(config: Config) {
  return {
    async shelveSettings(): Promise<ShelveSettings> {
      return { shutdownTimeout: config.shutdownTimeout, shelvedOffloadTime: config.shelvedOffloadTime };
    },
  };
}

export type SettingsActivities = ReturnType<typeof createSettingsActivities>;
