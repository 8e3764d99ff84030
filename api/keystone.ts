// Keystone tokens. Keystone itself validates each one (GET /v3/auth/tokens with the token as both
// caller and subject, which its default policy allows), so the API needs no service account; a
// validated token is then trusted for a short while, as keystonemiddleware does.
import { createHash } from 'node:crypto';
import { logger } from '../lib/logger.js';
import type { Authenticator, RequestContext } from './context.js';
import { ApiFault } from './faults.js';

/** How long a validated token is trusted without asking Keystone again: a revocation's delay. */
const CACHE_MS = 60_000;
const MAX_CACHED_TOKENS = 10_000;
const KEYSTONE_TIMEOUT_MS = 10_000;
/** Fernet and JWS tokens are URL-safe base64 and dots; anything else cannot be a token. */
const TOKEN = /^[\w.=-]{1,8192}$/;

interface TokenBody {
  token?: {
    expires_at?: string;
    user?: { id?: string };
    project?: { id: string };
    roles?: { name: string }[];
  };
}

function unauthorized(why: string): ApiFault {
  return new ApiFault(401, `The request you have made requires authentication: ${why}`);
}

export function keystoneAuthenticator(keystoneUrl: string): Authenticator {
  // Keyed by the token's hash, so that no token is kept in memory.
  const validated = new Map<string, { context: RequestContext; until: number }>();
  const unavailable = (why: string) => new ApiFault(503, `Keystone at ${keystoneUrl} ${why}; try again later.`);

  return async (token) => {
    if (token === undefined) throw unauthorized('send a project-scoped Keystone token as X-Auth-Token.');
    if (!TOKEN.test(token)) throw unauthorized('the token is invalid or has expired.');
    const key = createHash('sha256').update(token).digest('hex');
    const cached = validated.get(key);
    if (cached && cached.until > Date.now()) return cached.context;
    validated.delete(key);

    let response: Response;
    try {
      response = await fetch(`${keystoneUrl}/auth/tokens?nocatalog`, {
        headers: { accept: 'application/json', 'x-auth-token': token, 'x-subject-token': token },
        signal: AbortSignal.timeout(KEYSTONE_TIMEOUT_MS),
      });
    } catch (error) {
      logger.error({ err: error, keystoneUrl }, 'Keystone could not be reached to validate a token');
      throw unavailable('could not be reached to validate the token');
    }
    if (response.status === 401 || response.status === 404) throw unauthorized('the token is invalid or has expired.');
    const body = (await response.json().catch(() => ({}))) as TokenBody;
    const userId = body.token?.user?.id;
    if (!response.ok || !userId) {
      logger.error({ status: response.status, keystoneUrl }, 'Keystone did not validate a token');
      throw unavailable(`answered ${response.status} without a token when asked to validate one`);
    }
    const project = body.token?.project;
    if (!project) throw unauthorized('a project-scoped token is needed; this one is not scoped to a project.');
    const roles = (body.token?.roles ?? []).map((role) => role.name);
    const context = { userId, projectId: project.id, roles, isAdmin: roles.includes('admin') };

    if (validated.size >= MAX_CACHED_TOKENS) validated.delete(validated.keys().next().value!);
    const expiresAt = Date.parse(body.token?.expires_at ?? '');
    validated.set(key, { context, until: Math.min(expiresAt, Date.now() + CACHE_MS) });
    return context;
  };
}
