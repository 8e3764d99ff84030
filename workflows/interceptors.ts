// Every activity's summary names the step of the action it belongs to (the workflow's current
// details, set by setCurrentDetails() and recordStep()), so the Web UI's timeline reads like the
// action's steps.
import {
  type ActivityInput,
  getCurrentDetails,
  type LocalActivityInput,
  type Next,
  type WorkflowInterceptorsFactory,
  type WorkflowOutboundCallsInterceptor,
} from '@temporalio/workflow';

function withStepSummary<T extends ActivityInput | LocalActivityInput>(input: T): T {
  const summary = input.options.summary ?? (getCurrentDetails() || undefined);
  return { ...input, options: { ...input.options, summary } };
}

const summarizeSteps: WorkflowOutboundCallsInterceptor = {
  scheduleActivity: (input: ActivityInput, next: Next<WorkflowOutboundCallsInterceptor, 'scheduleActivity'>) =>
    next(withStepSummary(input)),
  scheduleLocalActivity: (
    input: LocalActivityInput,
    next: Next<WorkflowOutboundCallsInterceptor, 'scheduleLocalActivity'>,
  ) => next(withStepSummary(input)),
};

export const interceptors: WorkflowInterceptorsFactory = () => ({ outbound: [summarizeSteps] });
