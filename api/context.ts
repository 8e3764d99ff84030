// Who is asking. Development mode follows Nova's noauth2: the token is "user:project", and the
// user "admin" is an admin. It serves only loopback (api/main.ts refuses anything else).
import { ApiFault } from './faults.js';

export interface RequestContext {
  userId: string;
  projectId: string;
  roles: string[];
  isAdmin: boolean;
}

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
