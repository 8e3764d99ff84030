// shelved_offload_time > 0: a durable timer that offloads the instance after that many seconds,
// unless it was unshelved (or shelved again) meanwhile. Nova polls for this every
// shelved_poll_interval; a Temporal timer fires on time and survives worker and server restarts.
import { ApplicationFailure, log, sleep } from '@temporalio/workflow';
import type { Instance } from '../lib/nova.js';
import { configuredComputeHosts, database } from './activities.js';
import { checkedInput, inAction, reason, step, tagWorkflow } from './common.js';
import { offloadInstance } from './offload.js';

export interface OffloadTimerInput {
  instanceUuid: string;
  /** The shelve this timer belongs to: it offloads only while the instance still shows it. */
  shelvedImageId: string;
  seconds: number;
}

export async function shelvedOffloadTimer(rawInput: OffloadTimerInput): Promise<Instance | null> {
  const { instanceUuid, requestId, shelvedImageId, seconds } = checkedInput('shelvedOffloadTimer', rawInput);
  tagWorkflow({ instanceUuid, action: 'shelveOffload' });
  step(`offloading in ${seconds}s unless unshelved first`);
  await sleep(seconds * 1000);

  step('claiming the instance');
  const claimed = await database
    .claimInstance({
      instanceUuid,
      action: 'shelveOffload',
      requestId,
      shelvedImageId,
    })
    .catch((error: unknown) => {
      const failure = reason(error);
      // The instance moved on (unshelved, offloaded, shelved again, busy): nothing to do.
      if (failure instanceof ApplicationFailure && failure.nonRetryable) {
        log.info('offload timer skipped', { instanceUuid, reason: failure.message });
        return null;
      }
      throw failure;
    });
  if (!claimed) return null;
  tagWorkflow({ host: claimed.host });
  return inAction(
    requestId,
    async () => offloadInstance(claimed, requestId, await configuredComputeHosts()),
    () => database.releaseInstance({ instanceUuid, requestId }),
  );
}
