// One JSON line per event (pino), shared by the workers, the scripts and Temporal's runtime.
// No secret and no guest data reaches a line: values are made safe before they are written
// (secretsSafe), and pino's redact censors the known places of secrets as a second net.
import { pino } from 'pino';

/** Keys whose values are never logged: credentials, and HTTP clients' requests, which carry them. */
const SECRET_KEY = /passw|secret|token|authorization|cookie/i;
const REQUEST_KEYS = new Set(['headers', 'config', 'request', 'response', 'socket', 'agent']);
const CENSOR = '[redacted]';
const MAX_ARRAY = 64;
const MAX_KEYS = 64;
const MAX_STRING = 8192;
const MAX_DEPTH = 6;
/** Values a whole line may hold before the rest is left out. */
const MAX_NODES = 2000;

interface Walk {
  seen: WeakSet<object>;
  nodes: number;
}

function describeBytes(value: ArrayBufferView | ArrayBuffer): string {
  const name = Buffer.isBuffer(value) ? 'Buffer' : (Object.getPrototypeOf(value)?.constructor?.name ?? 'bytes');
  return `[${name} of ${value.byteLength} bytes]`;
}

function safeError(error: Error, depth: number, walk: Walk): Record<string, unknown> {
  const safe: Record<string, unknown> = {
    type: error.constructor?.name ?? error.name,
    message: safeValue(error.message, depth + 1, walk),
    stack: safeValue(error.stack, depth + 1, walk),
  };
  for (const [key, value] of Object.entries(error)) {
    if (key === 'cause' || value === undefined) continue;
    safe[key] = REQUEST_KEYS.has(key) || SECRET_KEY.test(key) ? CENSOR : safeValue(value, depth + 1, walk);
  }
  if (error.cause !== undefined) safe.cause = safeValue(error.cause, depth + 1, walk);
  return safe;
}

function safeValue(value: unknown, depth: number, walk: Walk): unknown {
  if (typeof value === 'string') {
    return value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}… (${value.length} characters)` : value;
  }
  if (value === null || typeof value !== 'object') return value;
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return describeBytes(value);
  if (walk.seen.has(value)) return '[Circular]';
  if (++walk.nodes > MAX_NODES || depth > MAX_DEPTH) return '[…]';
  walk.seen.add(value);
  try {
    if (value instanceof Error) return safeError(value, depth, walk);
    if (Array.isArray(value)) {
      if (value.length > MAX_ARRAY) return `[Array of ${value.length} items]`;
      return value.map((item) => safeValue(item, depth + 1, walk));
    }
    if (value instanceof Date) return value;
    if (typeof (value as { pipe?: unknown }).pipe === 'function') return `[${value.constructor?.name ?? 'stream'}]`;
    if (value instanceof Map || value instanceof Set) return `[${value.constructor.name} of ${value.size} items]`;
    const toJSON = (value as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') {
      try {
        return safeValue(toJSON.call(value), depth + 1, walk);
      } catch {
        return `[${value.constructor?.name ?? 'object'}]`;
      }
    }
    const entries = Object.entries(value);
    const safe: Record<string, unknown> = {};
    for (const [key, item] of entries.slice(0, MAX_KEYS)) {
      safe[key] = SECRET_KEY.test(key) || REQUEST_KEYS.has(key) ? CENSOR : safeValue(item, depth + 1, walk);
    }
    if (entries.length > MAX_KEYS) safe['…'] = `${entries.length - MAX_KEYS} more keys`;
    return safe;
  } finally {
    walk.seen.delete(value);
  }
}

/**
 * A log line's fields made safe to write: errors as their type, message, stack, own fields and
 * causes, but never an HTTP client's config, request or response (headers and bodies); no
 * credential; bytes (Buffers, typed arrays) and arrays over 64 items as a short description; no
 * string over 8 KiB.
 */
export function secretsSafe(fields: Record<string, unknown>): Record<string, unknown> {
  const walk: Walk = { seen: new WeakSet(), nodes: 0 };
  const safe: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(fields)) {
    safe[key] = SECRET_KEY.test(key) || REQUEST_KEYS.has(key) ? CENSOR : safeValue(value, 1, walk);
  }
  return safe;
}

/** The same places, should a value slip past secretsSafe: at the top, in errors and their causes. */
const REDACT_PATHS = (() => {
  const keys = [
    'headers',
    'config',
    'request',
    'response',
    'password',
    'token',
    'secret',
    'authToken',
    'authorization',
  ];
  const quoted = ['X-Auth-Token', 'x-auth-token', 'X-Subject-Token', 'x-subject-token', 'Authorization'];
  const prefixes = ['', '*.', 'err.cause.', 'error.cause.', 'err.cause.cause.', 'error.cause.cause.', '*.*.'];
  return prefixes.flatMap((prefix) => [
    ...keys.map((key) => `${prefix}${key}`),
    ...quoted.map((key) => `${prefix ? prefix.slice(0, -1) : ''}["${key}"]`),
  ]);
})();

/** A logger with the project's settings, writing to `destination` (stdout by default). */
export function createLogger(destination?: pino.DestinationStream): pino.Logger {
  const options: pino.LoggerOptions = {
    level: process.env.LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { log: secretsSafe },
    // Errors were made plain objects by secretsSafe; pino's own error serializer would redo it.
    serializers: { err: (value: unknown) => value, error: (value: unknown) => value },
    redact: { paths: REDACT_PATHS, censor: CENSOR },
  };
  return destination ? pino(options, destination) : pino(options);
}

export const logger = createLogger();
