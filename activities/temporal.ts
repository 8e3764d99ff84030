// Activities on Temporal itself, through the worker's own client (same connection, same
// namespace): what a workflow cannot see from inside, such as another workflow's status or who
// asked for its own cancellation.
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';

/** What a workflow that will run no code again ended as; NOT_FOUND when Temporal has none. */
export type ClosedStatus = 'COMPLETED' | 'FAILED' | 'CANCELLED' | 'TERMINATED' | 'TIMED_OUT' | 'NOT_FOUND';
const CLOSED: readonly string[] = ['COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'TIMED_OUT'];

export function createTemporalActivities() {
  return {
    /**
     * How the latest run of `workflowId` ended, or null while it may still run (running, paused,
     * continued as new): a claim it holds is nobody's only once it is closed.
     */
    async closedWorkflowStatus({ workflowId }: { workflowId: string }): Promise<ClosedStatus | null> {
      try {
        const { status } = await Context.current().client.workflow.getHandle(workflowId).describe();
        return CLOSED.includes(status.name) ? (status.name as ClosedStatus) : null;
      } catch (error) {
        if (error instanceof WorkflowNotFoundError) return 'NOT_FOUND';
        throw error;
      }
    },

    /**
     * The identity that asked to cancel the calling workflow (the Temporal CLI's, the Web UI's
     * user, a client's pid@host), as its history's WorkflowExecutionCancelRequested event
     * records it; null when none is recorded.
     */
    async cancelRequester(): Promise<string | null> {
      const { workflowExecution } = Context.current().info;
      if (!workflowExecution) return null;
      const { workflowId, runId } = workflowExecution;
      const history = await Context.current().client.workflow.getHandle(workflowId, runId).fetchHistory();
      const requested = (history.events ?? []).find((event) => event.workflowExecutionCancelRequestedEventAttributes);
      return requested?.workflowExecutionCancelRequestedEventAttributes?.identity || null;
    },
  };
}

export type TemporalActivities = ReturnType<typeof createTemporalActivities>;
