// What both workers set up the same way: Temporal's logs as our JSON lines, and the connection.
import { DefaultLogger, type LogLevel, NativeConnection, Runtime } from '@temporalio/worker';
import type { Config } from '../lib/config.js';
import { logger } from '../lib/logger.js';

const pinoLevel: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

let installed = false;

/** Routes the SDK's logs (workflow and activity loggers included) to pino; once per process. */
export function installRuntimeLogging(): void {
  if (installed) return;
  installed = true;
  Runtime.install({
    logger: new DefaultLogger('INFO', ({ level, message, meta }) => logger[pinoLevel[level]](meta ?? {}, message)),
  });
}

export function connectWorker(config: Config): Promise<NativeConnection> {
  return NativeConnection.connect({ address: config.temporal.address });
}

/** True when `moduleUrl` is the script node was asked to run. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && new URL(moduleUrl).pathname === process.argv[1];
}
