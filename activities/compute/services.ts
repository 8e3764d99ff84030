// What every compute step works with: the host's settings, its libvirt and Glance; and the one
// failure several steps share, a full disk.
import { ApplicationFailure } from '@temporalio/common';
import { isDiskFull } from '../../lib/compute-errors.js';
import type { Config } from '../../lib/config.js';
import type { GlanceClient } from '../../lib/glance.js';
import type { LibvirtConnection } from '../../lib/libvirt.js';

export interface ComputeServices {
  config: Config['compute'];
  libvirt: LibvirtConnection;
  glance: GlanceClient;
}

/**
 * A full disk does not empty itself: retrying would keep the instance waiting for space that may
 * never come, so the action fails at once and rolls back.
 */
export const failWhenDiskFull =
  (config: Config['compute'], what: string) =>
  (error: unknown): never => {
    if (error instanceof Error && isDiskFull(error)) {
      throw ApplicationFailure.create({
        type: 'HostDiskFull',
        message: `Host ${config.host} has no space left in ${config.instancesPath} for ${what}.`,
        nonRetryable: true,
        cause: error,
      });
    }
    throw error;
  };
