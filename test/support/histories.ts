// Workflow histories as JSON files, for test/workflows-mocked/replay.test.ts and the recording
// that scripts/record-histories makes. The SDK's historyToJSON and historyFromJSON
// (@temporalio/common/lib/proto-utils) fail in this install with "type must be a Type": each
// @temporalio package has its own copy of protobufjs, and the proto types come from another copy
// than the converter's. This is protobufjs's own JSON of the same message (times as
// {seconds, nanos}, enums by name, bytes in base64), which History.fromObject reads back.
import { temporal } from '@temporalio/proto';

type History = temporal.api.history.v1.IHistory;
const { History } = temporal.api.history.v1;

/** Where the checked-in histories are. */
export const recordedHistories = new URL('../replay/histories/', import.meta.url);

export function historyToJson(history: History): string {
  return `${JSON.stringify(History.fromObject(history).toJSON(), null, 2)}\n`;
}

export function historyFromJson(json: string): History {
  return History.fromObject(JSON.parse(json) as Record<string, unknown>);
}
