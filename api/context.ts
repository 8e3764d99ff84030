// Who is asking, as the configured authenticator tells from the request's X-Auth-Token: Keystone
// (api/keystone.ts), or Nova's noauth2 development mode, where the token is "user:project" and
// the user "admin" is an admin; api/main.ts serves noauth2 on loopback only.
import type { Config } from '../lib/config.js';
import { ApiFault } from './faults.js';
import { keystoneAuthenticator } from './keystone.js';

export interface RequestContext {
  userId: string;
  projectId: string;
  roles: string[];
  isAdmin: boolean;
}

/** The context of a request's token, or the ApiFault to answer: 401, or 503 when it cannot tell. */
export type Authenticator = (token: string | undefined) => Promise<RequestContext>;

const TOKEN = /^([^:\s]{1,255}):([^:\s]{1,255})$/;

export function noauthContext(token: string | undefined): RequestContext {
  const match = token === undefined ? null : TOKEN.exec(token);
  if (!match) {
    throw new ApiFault(401, 'The request you have made requires authentication: send X-Auth-Token: <user>:<project>.');
  }
  const [, userId, projectId] = match as unknown as [string, string, string];
  const isAdmin = userId === 'admin';
  return { userId, projectId, roles: isAdmin ? ['admin', 'member', 'reader'] : ['member', 'reader'], isAdmin };
}

export function authenticator(auth: Config['auth']): Authenticator {
  return auth.strategy === 'keystone' ? keystoneAuthenticator(auth.keystoneUrl) : async (token) => noauthContext(token);
}
