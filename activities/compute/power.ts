// Power steps of a compute host: a clean shutdown (then destroy), power on, and the power_state
// of every domain on the host.
import { Context, log, sleep } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { type Domain, DomainState } from '@unraid/libvirt';
import { powerStateOf } from '../../lib/libvirt.js';
import { isUuid, PowerState } from '../../lib/nova.js';
import { reportProgress } from './heartbeat.js';
import type { ComputeServices } from './services.js';

/** How often a clean shutdown request is sent again (Nova's [compute] shutdown_retry_interval). */
const SHUTDOWN_RETRY_INTERVAL_MS = 10_000;

/** True while the domain's guest runs (or is paused, or shutting down). */
async function running(domain: Domain): Promise<boolean> {
  const { state } = await domain.getInfo();
  return state !== DomainState.SHUTOFF && state !== DomainState.CRASHED;
}

/**
 * Asks the guest to shut down, again every shutdown_retry_interval (a guest may miss the first
 * ACPI event while it boots), for up to `timeout` seconds: Nova's _clean_shutdown. True when the
 * guest stopped in time.
 */
async function cleanShutdown(instanceUuid: string, domain: Domain, timeout: number): Promise<boolean> {
  const deadline = Date.now() + timeout * 1000;
  reportProgress({ step: 'waiting for guest shutdown' });
  for (let nextRequest = Date.now(); Date.now() < deadline;) {
    if (Date.now() >= nextRequest) {
      log.info('requesting a clean shutdown', { instanceUuid, timeout });
      // A guest that stopped since the last look refuses the request: that is the outcome sought.
      const refusal = await domain.shutdown().then(
        () => null,
        (error: unknown) => error,
      );
      if (!(await running(domain))) return true;
      if (refusal) throw refusal;
      nextRequest = Date.now() + SHUTDOWN_RETRY_INTERVAL_MS;
    }
    // Rejects when the action is cancelled: a cancelled power-off does not go on to destroy.
    await sleep(Math.max(0, Math.min(1000, deadline - Date.now())));
    if (!(await running(domain))) return true;
  }
  return false;
}

/**
 * Powers the instance off: a clean shutdown request, sent again every 10 s, up to `timeout`
 * seconds for the guest to stop, then destroy (docs/nova-behaviour.md §5.6). Returns the power_state after.
 */
export async function powerOffInstance(
  { libvirt }: ComputeServices,
  { instanceUuid, timeout }: { instanceUuid: string; timeout: number },
): Promise<PowerState> {
  const domain = await libvirt.lookupInstance(instanceUuid);
  if (!domain) return PowerState.NOSTATE;
  if (await running(domain)) {
    const started = Date.now();
    const stopped = timeout > 0 && (await cleanShutdown(instanceUuid, domain, timeout));
    Context.current().cancellationSignal.throwIfAborted();
    // Whether the guest powered itself off tells an operator if its data was flushed.
    const seconds = (Date.now() - started) / 1000;
    if (stopped) log.info('the guest shut down cleanly', { instanceUuid, seconds });
    else if (await running(domain)) {
      if (timeout > 0) log.warn('the guest did not shut down in time: destroying it', { instanceUuid, timeout });
      else log.info('destroying the domain: no clean shutdown was asked for', { instanceUuid });
      await domain.destroy();
    }
  }
  return powerStateOf((await domain.getInfo()).state);
}

export async function powerOnInstance(
  { config, libvirt }: ComputeServices,
  { instanceUuid }: { instanceUuid: string },
): Promise<PowerState> {
  const domain = await libvirt.lookupInstance(instanceUuid);
  if (!domain) {
    throw ApplicationFailure.create({
      type: 'InstanceNotFoundOnHost',
      message: `Instance ${instanceUuid} has no domain on host ${config.host}.`,
      nonRetryable: true,
    });
  }
  if ((await domain.getInfo()).state === DomainState.SHUTOFF) await domain.create();
  return powerStateOf((await domain.getInfo()).state);
}

/**
 * The power_state of each instance's domain on this host, by instance uuid (Nova's
 * _sync_power_states reads the same): what an instance that shows none here has is NOSTATE.
 */
export async function listInstancePowerStates({ libvirt }: ComputeServices): Promise<Record<string, PowerState>> {
  const states: Record<string, PowerState> = {};
  for (const domain of await (await libvirt.open()).connectListAllDomains()) {
    const name = await domain.getName();
    const uuid = name.slice('instance-'.length);
    if (name.startsWith('instance-') && isUuid(uuid)) states[uuid] = powerStateOf((await domain.getInfo()).state);
  }
  return states;
}
