// The compute activities' own timing, on a stand-in domain and the test's clock (no stack): a
// heartbeat every 5 s whatever the step does, a clean shutdown asked again every 10 s until the
// timeout, and a cancelled power-off that never goes on to destroy.
import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { type Domain, DomainState } from '@unraid/libvirt';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createComputeActivities } from '../../activities/compute/index.js';
import { loadConfig } from '../../lib/config.js';
import type { GlanceClient } from '../../lib/glance.js';
import type { LibvirtConnection } from '../../lib/libvirt.js';
import { PowerState } from '../../lib/nova.js';
import type { Progress } from '../../lib/progress.js';

const instanceUuid = '6f1c2b8e-3d4a-4e5f-8a9b-0c1d2e3f4a5b';

/**
 * A guest that answers the `answerAt`-th shutdown request (never, by default), and whose destroy
 * takes `destroyMs` (a QEMU stuck in I/O).
 */
function guest(answerAt = Infinity, destroyMs = 0) {
  let state = DomainState.RUNNING;
  const calls = { shutdown: 0, destroy: 0 };
  const domain = {
    getInfo: async () => ({ state }),
    shutdown: async () => {
      calls.shutdown++;
      if (calls.shutdown >= answerAt) state = DomainState.SHUTOFF;
    },
    destroy: async () => {
      await new Promise((resolve) => setTimeout(resolve, destroyMs));
      calls.destroy++;
      state = DomainState.SHUTOFF;
    },
  } as unknown as Domain;
  const libvirt = { lookupInstance: async () => domain } as unknown as LibvirtConnection;
  return { calls, compute: createComputeActivities(loadConfig({}).compute, libvirt, {} as GlanceClient) };
}

function recordHeartbeats(env: MockActivityEnvironment): Progress[] {
  const beats: Progress[] = [];
  env.on('heartbeat', (details: Progress) => beats.push(details));
  return beats;
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('heartbeats', () => {
  it('go on every 5 s through a step that reports nothing, repeating its details', async () => {
    const { calls, compute } = guest(Infinity, 20_000);
    const env = new MockActivityEnvironment();
    const beats = recordHeartbeats(env);
    const done = env.run(compute.powerOffInstance, { instanceUuid, timeout: 0 });
    await vi.advanceTimersByTimeAsync(21_000);
    expect(await done).toBe(PowerState.SHUTDOWN);
    expect(calls.destroy).toBe(1);
    // One at the start, then one at 5, 10, 15 and 20 s of the destroy.
    expect(beats).toEqual(Array(5).fill({ step: 'powerOffInstance' }));
  });

  it("start from the earlier attempt's upload, until the attempt reports progress of its own", async () => {
    const { compute } = guest(1);
    const uploaded = { size: 1, osHashAlgo: 'sha512', osHashValue: 'ab' };
    const env = new MockActivityEnvironment({ heartbeatDetails: { step: 'upload', uploaded } satisfies Progress });
    const beats = recordHeartbeats(env);
    const done = env.run(compute.powerOffInstance, { instanceUuid, timeout: 60 });
    await vi.advanceTimersByTimeAsync(1000);
    await done;
    expect(beats.slice(0, 2)).toEqual([{ step: 'powerOffInstance', uploaded }, { step: 'waiting for guest shutdown' }]);
  });
});

describe('powerOffInstance', () => {
  it('asks again every 10 s, and stops asking once the guest is off', async () => {
    const { calls, compute } = guest(3);
    const env = new MockActivityEnvironment();
    const done = env.run(compute.powerOffInstance, { instanceUuid, timeout: 60 });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(await done).toBe(PowerState.SHUTDOWN);
    expect(calls).toEqual({ shutdown: 3, destroy: 0 });
  });

  it('destroys a guest that does not stop within the timeout', async () => {
    const { calls, compute } = guest();
    const done = new MockActivityEnvironment().run(compute.powerOffInstance, { instanceUuid, timeout: 25 });
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await done).toBe(PowerState.SHUTDOWN);
    // Asked at 0, 10 and 20 s.
    expect(calls).toEqual({ shutdown: 3, destroy: 1 });
  });

  it('when cancelled while it waits: fails cancelled, and never destroys', async () => {
    const { calls, compute } = guest();
    const env = new MockActivityEnvironment();
    const done = env.run(compute.powerOffInstance, { instanceUuid, timeout: 60 }).catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(12_000);
    env.cancel();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(await done).toBeInstanceOf(CancelledFailure);
    expect(calls).toEqual({ shutdown: 2, destroy: 0 });
  });
});
