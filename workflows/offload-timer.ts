// shelved_offload_time > 0: a durable timer that offloads the instance after that many seconds,
// unless it was unshelved (or shelved again) meanwhile. Nova polls for this every
// shelved_poll_interval; a Temporal timer fires on time and survives worker and server restarts.
import {
  ApplicationFailure,
  continueAsNew,
  isCancellation,
  log,
  setCurrentDetails,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { Instance } from '../lib/nova.js';
import { recordAction } from './action-log.js';
import { configuredComputeHosts, database } from './activities.js';
import { applicationFailureOf } from './failures.js';
import { checkedInput, tagWorkflow } from './input.js';
import { offloadInstance } from './offload.js';

export interface OffloadTimerInput {
  instanceUuid: string;
  /** The shelve this timer belongs to: it offloads only while the instance still shows it. */
  shelvedImageId: string;
  seconds: number;
}

/** Back-off between tries of an offload that could not be done: doubling from 5 s to an hour. */
const FIRST_RETRY_SECONDS = 5;
const LAST_RETRY_SECONDS = 3600;

export async function shelvedOffloadTimer(rawInput: OffloadTimerInput): Promise<Instance | null> {
  const { instanceUuid, requestId, shelvedImageId, seconds } = checkedInput('shelvedOffloadTimer', rawInput);
  tagWorkflow({ instanceUuid, action: 'shelveOffload' });
  setCurrentDetails(`offloading in ${seconds}s unless unshelved first`);
  await sleep(seconds * 1000);

  // As Nova's periodic task, it tries again while the instance is busy or the offload fails, and
  // stops only when that shelve is over (unshelved, offloaded, deleted, or shelved anew).
  for (let tries = 0, retry = FIRST_RETRY_SECONDS; ; tries++, retry = Math.min(retry * 2, LAST_RETRY_SECONDS)) {
    // Each try is an action of its own in the actions log, as each run of Nova's periodic task.
    const outcome = await tryOffload(instanceUuid, tries ? `${requestId}-${tries}` : requestId, shelvedImageId);
    if (outcome.done) return outcome.instance;
    setCurrentDetails(`offload not done (${outcome.why}): trying again in ${retry}s`);
    await sleep(retry * 1000);
    // Its history stays short however long the instance stays busy.
    if (workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof shelvedOffloadTimer>({ instanceUuid, shelvedImageId, seconds: 0 });
    }
  }
}

type Outcome = { done: true; instance: Instance | null } | { done: false; why: string };

async function tryOffload(instanceUuid: string, requestId: string, shelvedImageId: string): Promise<Outcome> {
  setCurrentDetails('claiming the instance');
  let claimed: Instance;
  try {
    claimed = await database.claimInstance({ instanceUuid, action: 'shelveOffload', requestId, shelvedImageId });
  } catch (error) {
    const failure = applicationFailureOf(error);
    if (!(failure instanceof ApplicationFailure)) throw failure;
    // Busy with another action: it may yet end SHELVED with this shelve's snapshot.
    if (failure.type === 'UnexpectedTaskState') return { done: false, why: failure.message };
    // The shelve is over (unshelved, offloaded, shelved again, deleted): nothing to do.
    log.info('offload timer ends', { instanceUuid, reason: failure.message });
    return { done: true, instance: null };
  }
  tagWorkflow({ host: claimed.host });
  try {
    const instance = await recordAction(
      requestId,
      async () => offloadInstance(claimed, requestId, await configuredComputeHosts()),
      () => database.releaseInstance({ instanceUuid, requestId }),
    );
    return { done: true, instance };
  } catch (error) {
    if (isCancellation(error)) throw error;
    return { done: false, why: String((applicationFailureOf(error) as Error).message) };
  }
}
