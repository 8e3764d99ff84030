// Removing an instance from this host: its domain and the files under its instance folder.
import { log } from '@temporalio/activity';
import type { Domain } from '@unraid/libvirt';
import { removeInstanceFromHost } from '../../lib/host-paths.js';
import { reportProgress } from './heartbeat.js';
import type { ComputeServices } from './services.js';

/** removeInstanceFromHost, with its steps as the activity's progress. */
export async function removeFromHost(
  { config }: ComputeServices,
  instanceUuid: string,
  domain: Domain | null,
): Promise<void> {
  await removeInstanceFromHost(config, instanceUuid, domain, (step) => reportProgress({ step }));
}

/** Undefines the domain and removes the instance's files from this host. */
export async function destroyInstance(
  services: ComputeServices,
  { instanceUuid }: { instanceUuid: string },
): Promise<void> {
  await removeFromHost(services, instanceUuid, await services.libvirt.lookupInstance(instanceUuid));
  log.info('instance destroyed on host', { instanceUuid, host: services.config.host });
}
