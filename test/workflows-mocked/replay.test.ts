// Every checked-in history (test/replay/histories/, made by scripts/record-histories) replayed
// against the current workflow code, bundled as workers/conductor.ts runs it. A change that makes
// a workflow that started on the old code issue other commands (an activity, timer or child
// workflow added, removed or moved) fails here: a worker deployed with it would fail such a
// workflow's next task. workflows/README.md says how to make such a change.
import { readdirSync, readFileSync } from 'node:fs';
import { DefaultLogger, Runtime, Worker, type WorkflowBundle } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { historyFromJson, recordedHistories } from '../support/histories.js';
import { bundleConductorWorkflows } from './environment.js';

const files = readdirSync(recordedHistories).filter((file) => file.endsWith('.json'));

describe('the recorded histories', () => {
  let workflowBundle: WorkflowBundle;

  beforeAll(async () => {
    // Warnings and errors only, as ./environment.ts: not each replay worker's state changes.
    const { logger } = Runtime.install({ logger: new DefaultLogger('WARN') });
    workflowBundle = await bundleConductorWorkflows(logger);
  });

  it('are there', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  it.each(files)('replay on the current workflow code: %s', async (file) => {
    const history = historyFromJson(readFileSync(new URL(file, recordedHistories), 'utf8'));
    // Throws DeterminismViolationError, or the failure the replay met, naming the file.
    await Worker.runReplayHistory({ workflowBundle }, history, file);
  });
});
