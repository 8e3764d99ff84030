// Where the tests keep their workers' logs: test-output/logs/, which scripts/scan-logs reads
// after the suite for secrets (tokens, the Keystone admin's password, X-Auth-Token values).
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LogEntry } from '@temporalio/worker';
import { pino } from 'pino';
import { createLogger } from '../../lib/logger.js';
import { logThrough } from '../../workers/runtime.js';

export const testLogDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-output/logs');

/** test-output/logs/<name>, its folder made. */
export function testLogFile(name: string): string {
  mkdirSync(testLogDir, { recursive: true });
  return path.join(testLogDir, name);
}

let inProcess: ((entry: LogEntry) => void) | undefined;

/**
 * The log function for the SDK's logger in the test process (its in-process workers): through the
 * project's pino settings, so redacted as in production, to stderr as before and to
 * test-output/logs/in-process-workers.log.
 */
export function testRuntimeLog(entry: LogEntry): void {
  inProcess ??= logThrough(
    createLogger(
      pino.multistream([
        { stream: process.stderr },
        { stream: pino.destination({ dest: testLogFile('in-process-workers.log'), append: true, sync: true }) },
      ]),
    ),
  );
  inProcess(entry);
}
