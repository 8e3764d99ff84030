// What both workers set up the same way: Temporal's logs as our JSON lines, and the connection.
import { DefaultLogger, type LogEntry, type LogLevel, NativeConnection, Runtime } from '@temporalio/worker';
import type { Logger } from 'pino';
import type { Config } from '../lib/config.js';
import { temporalConnectionError, temporalConnectionOptions } from '../lib/temporal-connection.js';
import { logger } from '../lib/logger.js';

const pinoLevel: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

let installed = false;

/**
 * A log function for the SDK's DefaultLogger that writes through `target`, one of our pino
 * loggers: the SDK's meta (the `error` of 'Activity failed', with its causes) is made safe and
 * redacted there like any other line (lib/logger.ts).
 */
export function logThrough(target: Logger): (entry: LogEntry) => void {
  return ({ level, message, meta }) => target[pinoLevel[level]](meta ?? {}, message);
}

/** Routes the SDK's logs (workflow and activity loggers included) to pino; once per process. */
export function installRuntimeLogging(): void {
  if (installed) return;
  installed = true;
  Runtime.install({ logger: new DefaultLogger('INFO', logThrough(logger)) });
}

/** The worker's connection to Temporal, with the TLS, client certificate and API key configured. */
export async function connectWorker(config: Config): Promise<NativeConnection> {
  try {
    return await NativeConnection.connect(temporalConnectionOptions(config.temporal));
  } catch (error) {
    throw await temporalConnectionError(config.temporal, error);
  }
}

/** True when `moduleUrl` is the script node was asked to run. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && new URL(moduleUrl).pathname === process.argv[1];
}
