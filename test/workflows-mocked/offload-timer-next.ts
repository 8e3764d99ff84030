// The "new code" of versioning.test.ts: the offload timer as a later release might change it, so
// that it reads the conductor's settings before its timer starts, behind patched(). Made by a
// workflow interceptor in the new Worker's bundle, not by editing workflows/offload-timer.ts: the
// same commands as `if (patched(id)) await settings.conductorSettings();` at the top of
// shelvedOffloadTimer, without a test-only branch in the real workflow.
import {
  type Next,
  patched,
  proxyActivities,
  type WorkflowExecuteInput,
  type WorkflowInboundCallsInterceptor,
  type WorkflowInterceptorsFactory,
  workflowInfo,
} from '@temporalio/workflow';
import type { SettingsActivities } from '../../activities/settings.js';

const settings = proxyActivities<SettingsActivities>({ startToCloseTimeout: '10 seconds' });

const readSettingsFirst: WorkflowInboundCallsInterceptor = {
  async execute(input: WorkflowExecuteInput, next: Next<WorkflowInboundCallsInterceptor, 'execute'>) {
    if (workflowInfo().workflowType === 'shelvedOffloadTimer' && patched('offload-timer-reads-settings-first')) {
      await settings.conductorSettings();
    }
    return next(input);
  },
};

export const interceptors: WorkflowInterceptorsFactory = () => ({ inbound: [readSettingsFirst] });
