// How long a workflow's activities spent working, read from its history: what is left of an
// action's end-to-end time is the orchestration's own cost (task queues, workflow tasks, RPCs).
import type { WorkflowHandle } from '@temporalio/client';
import { unionLength } from './stats.js';

interface Timestamp {
  seconds?: { toString(): string } | number | null;
  nanos?: number | null;
}

const ms = (ts: Timestamp | null | undefined) => Number(String(ts?.seconds ?? 0)) * 1000 + (ts?.nanos ?? 0) / 1e6;

/**
 * Milliseconds during which at least one activity of the workflow was running. An activity
 * counts from its ActivityTaskStarted to its end. A local activity (a row of the actions log)
 * has no start in the history: it counts from the start of the workflow task that ran it to the
 * completion time its marker records, which over-counts it by the workflow code run before it.
 */
export async function activityMilliseconds(handle: WorkflowHandle): Promise<number> {
  const events = (await handle.fetchHistory()).events ?? [];
  const started = new Map<string, number>();
  const intervals: [number, number][] = [];
  let workflowTaskStarted = 0;
  for (const event of events) {
    const time = ms(event.eventTime);
    if (event.workflowTaskStartedEventAttributes) workflowTaskStarted = time;
    const start = event.activityTaskStartedEventAttributes;
    if (start) started.set(String(start.scheduledEventId), time);
    const end =
      event.activityTaskCompletedEventAttributes ??
      event.activityTaskFailedEventAttributes ??
      event.activityTaskTimedOutEventAttributes ??
      event.activityTaskCanceledEventAttributes;
    const from = end && started.get(String(end.scheduledEventId));
    if (from !== undefined && from !== null) intervals.push([from, time]);
    const marker = event.markerRecordedEventAttributes;
    const payload = marker?.markerName === 'core_local_activity' ? marker.details?.data?.payloads?.[0] : undefined;
    if (payload?.data) {
      const data = JSON.parse(Buffer.from(payload.data).toString()) as { complete_time?: Timestamp };
      if (data.complete_time) intervals.push([workflowTaskStarted, ms(data.complete_time)]);
    }
  }
  return unionLength(intervals);
}
