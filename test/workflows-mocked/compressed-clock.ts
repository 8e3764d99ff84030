// A workflow interceptor for the fast tier's day-long timers. The dev server it runs on does not
// skip time (createTimeSkipping's Java test server cannot be fetched here, see ./environment.ts),
// so a timer of an hour or more lasts one second per day it asks for. Its summary keeps what the
// workflow asked for, which the test reads back from the history.
import type {
  Next,
  TimerInput,
  WorkflowInterceptorsFactory,
  WorkflowOutboundCallsInterceptor,
} from '@temporalio/workflow';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export function askedFor(durationMs: number): string {
  return `asked for ${durationMs} ms`;
}

const compressLongTimers: WorkflowOutboundCallsInterceptor = {
  startTimer: (input: TimerInput, next: Next<WorkflowOutboundCallsInterceptor, 'startTimer'>) =>
    input.durationMs < HOUR_MS
      ? next(input)
      : next({
          ...input,
          durationMs: Math.ceil((input.durationMs / DAY_MS) * 1000),
          options: { ...input.options, summary: askedFor(input.durationMs) },
        }),
};

export const interceptors: WorkflowInterceptorsFactory = () => ({ outbound: [compressLongTimers] });
