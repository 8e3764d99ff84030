// A failed Glance call as an ApplicationFailure a workflow can judge (retryable or not) and a
// worker can log: plain facts only, never the request's token or body.
import { ApplicationFailure } from '@temporalio/common';
import { isAxiosError } from 'axios';
import { KeystoneAuthError } from './keystone-session.js';

// Client errors that no retry can fix; 408, 409 and 429 may pass on their own.
function isPermanent(status: number | undefined): boolean {
  return status !== undefined && status >= 400 && status < 500 && ![408, 409, 429].includes(status);
}

/** Longest excerpt of Glance's answer a failure carries. */
const MAX_EXCERPT = 300;
/** A Keystone Fernet token, should one ever be echoed back. */
const FERNET_TOKEN = /gAAAAA[\w-]{20,}/g;

function excerpt(text: string): string {
  const plain = text
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(FERNET_TOKEN, '[token]');
  return plain.length > MAX_EXCERPT ? `${plain.slice(0, MAX_EXCERPT)}…` : plain;
}

/** Method and URL path of a request, without its query, headers or body. */
export function requestLine(config: { method?: string; baseURL?: string; url?: string } | undefined): {
  method: string;
  path: string;
} {
  const method = (config?.method ?? 'get').toUpperCase();
  const url = `${config?.baseURL ?? ''}${config?.url ?? ''}`;
  const path = URL.canParse(url) ? new URL(url).pathname : (url.split(/[?#]/)[0] ?? '');
  return { method, path };
}

/**
 * A request refused with 401 whose body, a stream, is spent and cannot be sent again: the token
 * is forgotten and the failure is retryable, so that the activity's next attempt starts over
 * with a new one.
 */
export class StaleTokenError extends Error {
  constructor(readonly request: { method: string; path: string }) {
    super('HTTP 401: the service token was refused; a new one is used on the next attempt');
  }
}

/**
 * The failure of a Glance call, from plain facts only: the request's method and path, Glance's
 * status and a short excerpt of its answer, or the network error. The AxiosError itself is never
 * chained: its config holds the request's headers (the token) and body (disk bytes), and workers
 * log failed activities with their whole cause chain.
 */
export function glanceFailure(what: string, error: unknown): ApplicationFailure {
  let reason: string;
  let request: { method: string; path: string } | undefined;
  let status: number | undefined;
  let code: string | undefined;
  let nonRetryable = false;
  if (isAxiosError(error)) {
    status = error.response?.status;
    // A network error's code; axios' own for an HTTP error (ERR_BAD_RESPONSE) says no more than its status.
    code = status ? undefined : error.code;
    request = requestLine(error.config);
    const body: unknown = error.response?.data;
    // A stream (a download's error answer) is left unread.
    const detail =
      typeof body === 'string'
        ? excerpt(body)
        : body !== null && typeof body === 'object' && !(typeof (body as { pipe?: unknown }).pipe === 'function')
          ? excerpt(JSON.stringify(body))
          : '';
    const message = excerpt(error.message);
    reason = status
      ? `HTTP ${status}${detail ? `: ${detail}` : ''}`
      : code && !message.includes(code)
        ? `${code}: ${message}`
        : message;
    nonRetryable = isPermanent(status);
  } else if (error instanceof StaleTokenError) {
    status = 401;
    request = error.request;
    reason = error.message;
  } else if (error instanceof KeystoneAuthError) {
    status = error.status;
    reason = error.message;
    nonRetryable = !error.retryable;
  } else {
    const errorCode = error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
    code = typeof errorCode === 'string' ? errorCode : undefined;
    reason = excerpt(error instanceof Error ? error.message : String(error));
  }
  return ApplicationFailure.create({
    type: 'GlanceError',
    message: `Glance ${what} failed: ${reason}${request ? ` (${request.method} ${request.path})` : ''}`,
    nonRetryable,
    details: [
      { status: status ?? null, method: request?.method ?? null, path: request?.path ?? null, code: code ?? null },
    ],
  });
}
