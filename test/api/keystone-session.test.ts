// The Keystone session of Glance's service credentials, against the stack's real Keystone: it
// gets a token and keeps it, renews it once after Glance refuses it (here, a test server that
// asks Keystone about each token, as keystonemiddleware does), and says clearly, without the
// password, when Keystone refuses the credentials.
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { GlanceClient } from '../../lib/glance.js';
import { type KeystoneCredentials, KeystoneAuthError, KeystoneSession } from '../../lib/keystone-session.js';
import { adminPassword, issueToken, keystone, keystoneUrl } from '../support/keystone.js';

const admin: KeystoneCredentials = {
  kind: 'password',
  userName: 'admin',
  password: adminPassword,
  userDomain: 'Default',
  projectName: 'admin',
  projectDomain: 'Default',
};

describe('the Keystone session of the Glance service credentials', () => {
  /** The test's own admin token, to validate and revoke the session's tokens. */
  let adminToken: string;
  let glance: Server;
  let glanceUrl: string;
  /** Each token the test Glance was sent, and whether Keystone found it valid. */
  const seen: { token: string; valid: boolean }[] = [];

  const validate = async (token: string) =>
    (
      await fetch(`${keystoneUrl}/auth/tokens?nocatalog`, {
        headers: { 'x-auth-token': adminToken, 'x-subject-token': token },
      })
    ).status === 200;

  /** Glance's client, pointed at the test's Glance, with the admin's name and this password. */
  const glanceClient = (password: string) =>
    new GlanceClient(
      loadConfig({
        ...process.env,
        GLANCE_URL: glanceUrl,
        GLANCE_AUTH: 'keystone',
        KEYSTONE_URL: keystoneUrl,
        GLANCE_SERVICE_USERNAME: 'admin',
        GLANCE_SERVICE_PASSWORD: password,
        GLANCE_SERVICE_PROJECT: 'admin',
      }).glance,
    );

  beforeAll(async () => {
    adminToken = await issueToken('admin', adminPassword, { name: 'admin' });
    glance = createServer((request, response) => {
      const token = String(request.headers['x-auth-token'] ?? '');
      void validate(token).then((valid) => {
        seen.push({ token, valid });
        if (!valid) response.writeHead(401, { 'content-type': 'text/plain' }).end('401 Unauthorized');
        else response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'image' }));
      });
    });
    await new Promise<void>((resolve) => glance.listen(0, '127.0.0.1', resolve));
    glanceUrl = `http://127.0.0.1:${(glance.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    glance?.closeAllConnections();
    await new Promise((resolve) => glance?.close(resolve));
  });

  it('gets a project-scoped token by password, and reuses it', async () => {
    const session = new KeystoneSession(keystoneUrl, admin);
    const first = await session.token();
    expect(first.renewed).toBe(true);
    expect(first.token).toMatch(/^gAAAAA/);
    expect(await session.token()).toEqual({ token: first.token, renewed: false });
    const response = await fetch(`${keystoneUrl}/auth/tokens?nocatalog`, {
      headers: { 'x-auth-token': adminToken, 'x-subject-token': first.token },
    });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { token: { project: { name: string } } }).token.project.name).toBe('admin');
  });

  it('after its token is revoked, authenticates once more and the request succeeds', async () => {
    const client = glanceClient(adminPassword);
    const owner = { projectId: 'p', userId: 'u' };
    seen.length = 0;
    expect(await client.getImage(owner, 'image')).toEqual({ id: 'image' });
    expect(await client.getImage(owner, 'image')).toEqual({ id: 'image' });
    const first = seen[0]!.token;
    expect(seen).toEqual([
      { token: first, valid: true },
      { token: first, valid: true },
    ]);

    const revoked = await fetch(`${keystoneUrl}/auth/tokens`, {
      method: 'DELETE',
      headers: { 'x-auth-token': adminToken, 'x-subject-token': first },
    });
    expect(revoked.status).toBe(204);

    expect(await client.getImage(owner, 'image')).toEqual({ id: 'image' });
    expect(seen.slice(2)).toEqual([
      { token: first, valid: false },
      { token: expect.not.stringMatching(first), valid: true },
    ]);
    // And the new token is kept.
    expect(await client.getImage(owner, 'image')).toEqual({ id: 'image' });
    expect(seen[4]).toEqual(seen[3]);
  });

  it('works with an application credential too', async () => {
    const { token: about } = (await (
      await fetch(`${keystoneUrl}/auth/tokens?nocatalog`, {
        headers: { 'x-auth-token': adminToken, 'x-subject-token': adminToken },
      })
    ).json()) as { token: { user: { id: string } } };
    const created = await keystone<{ application_credential: { id: string; secret: string } }>(
      'POST',
      `/users/${about.user.id}/application_credentials`,
      adminToken,
      // It expires on its own: Keystone on SQLite fails to delete an application credential
      // ("database is locked").
      {
        application_credential: {
          name: `vm-shelve-test-${randomUUID().slice(0, 8)}`,
          expires_at: new Date(Date.now() + 600_000).toISOString(),
        },
      },
    );
    const { id, secret } = created.body.application_credential;
    const session = new KeystoneSession(keystoneUrl, { kind: 'applicationCredential', id, secret });
    expect(await validate((await session.token()).token)).toBe(true);

    // Changed at its start: bcrypt, which Keystone hashes secrets with, reads only 72 bytes.
    const wrongSecret = `${secret.startsWith('x') ? 'y' : 'x'}${secret.slice(1)}`;
    const wrong = new KeystoneSession(keystoneUrl, { kind: 'applicationCredential', id, secret: wrongSecret });
    const error = await wrong.token().catch((error: unknown) => error);
    expect(error).toBeInstanceOf(KeystoneAuthError);
    expect((error as Error).message).toBe(
      `Keystone refused the service credentials for application credential ${id} (HTTP 401)`,
    );
    expect(JSON.stringify(error)).not.toContain(secret.slice(1));
  });

  it('a wrong password: a clear error that names the user, never the password', async () => {
    const password = `wrong-${randomUUID()}`;
    const session = new KeystoneSession(keystoneUrl, { ...admin, password });
    const error = await session.token().catch((error: unknown) => error);
    expect(error).toBeInstanceOf(KeystoneAuthError);
    expect((error as KeystoneAuthError).message).toBe(
      'Keystone refused the service credentials for user admin (domain Default, project admin) (HTTP 401)',
    );
    expect((error as KeystoneAuthError).retryable).toBe(false);
    expect(JSON.stringify(error)).not.toContain(password);

    // Through Glance's client: a failure no retry repeats, without the password either.
    const client = glanceClient(password);
    const failure = await client.getImage({ projectId: 'p', userId: 'u' }, 'image').catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect((failure as ApplicationFailure).nonRetryable).toBe(true);
    expect((failure as ApplicationFailure).message).toContain(
      'Keystone refused the service credentials for user admin',
    );
    expect(`${(failure as Error).message} ${(failure as Error).stack}`).not.toContain(password);
  });
});
