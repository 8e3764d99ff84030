// A failed Glance call leaves neither the service token nor the guest's bytes in the failure
// (its whole cause chain, as a worker logs it and Temporal records it) nor in a log line: a real
// HTTP server on loopback plays Keystone and a Glance that fails in each way.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { ApplicationFailure } from '@temporalio/common';
import axios, { isAxiosError } from 'axios';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { GlanceClient } from '../../lib/glance.js';
import { createLogger } from '../../lib/logger.js';

const owner = { projectId: 'project-a', userId: 'user-a' };
const imageId = '0b9c7c36-5d1a-4d4c-9d8e-7a1f2b3c4d5e';
/** A Fernet-shaped token, unlike any other text here. */
const tokens: string[] = [];
const newToken = () => `gAAAAA${randomBytes(90).toString('base64url')}`;
const password = `pw-${randomBytes(12).toString('hex')}`;
/** 1 MiB of recognisable guest data. */
const guestData = Buffer.from('GUESTDATA'.repeat(Math.ceil(1048576 / 9)).slice(0, 1048576));

function everything(failure: unknown): string {
  // The failure and each cause, with every own property (stack and message included).
  const chain: unknown[] = [];
  for (let error: unknown = failure; error instanceof Error; error = error.cause) {
    const fields = error as unknown as Record<string, unknown>;
    chain.push(Object.fromEntries(Object.getOwnPropertyNames(error).map((key) => [key, fields[key]])));
  }
  return JSON.stringify(chain);
}

function expectClean(text: string): void {
  for (const token of tokens) expect(text).not.toContain(token);
  expect(text).not.toContain(password);
  expect(text).not.toContain('GUESTDATA');
  expect(text).not.toContain('X-Auth-Token');
  expect(text.length).toBeLessThan(4096);
}

/** One line through the project's pino settings, as the SDK's 'Activity failed' is logged. */
function logged(fields: Record<string, unknown>): string {
  let line = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      line += chunk.toString();
      callback();
    },
  });
  createLogger(sink).warn(fields, 'Activity failed');
  return line;
}

async function failureOf(call: Promise<unknown>): Promise<ApplicationFailure> {
  const error = await call.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(error).toBeInstanceOf(ApplicationFailure);
  return error as ApplicationFailure;
}

describe('Glance failures', () => {
  let server: Server;
  let url: string;
  let authentications = 0;
  const seenTokens: (string | undefined)[] = [];

  const read = (request: IncomingMessage) =>
    new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => resolve(Buffer.concat(chunks)));
      request.on('error', () => resolve(Buffer.concat(chunks)));
    });

  function answer(request: IncomingMessage, response: ServerResponse): void {
    const path = request.url ?? '';
    if (request.method === 'POST' && path.startsWith('/v3/auth/tokens')) {
      void read(request).then((body) => {
        authentications++;
        if (!body.toString().includes(password)) {
          response.writeHead(401, { 'content-type': 'application/json' }).end('{"error": {"code": 401}}');
          return;
        }
        const token = newToken();
        tokens.push(token);
        const expires_at = new Date(Date.now() + 3_600_000).toISOString();
        response
          .writeHead(201, { 'content-type': 'application/json', 'x-subject-token': token })
          .end(JSON.stringify({ token: { expires_at } }));
      });
      return;
    }
    seenTokens.push(request.headers['x-auth-token'] as string | undefined);
    const route = path.split('?')[0]!;
    if (route === '/v2/images/ok') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'ok' }));
    } else if (route.startsWith('/v2/images/') && route.endsWith('/file') && request.method === 'PUT') {
      const reply = path.includes('reset')
        ? () => request.socket.destroy()
        : path.includes('unauthorized')
          ? () => response.writeHead(401, { 'content-type': 'text/html' }).end('<html><h1>401 Unauthorized</h1></html>')
          : () =>
              response
                .writeHead(500, { 'content-type': 'text/html' })
                .end(`<html><body><h1>500 Internal Server Error</h1>${'<p>trace</p>'.repeat(2000)}</body></html>`);
      // Fail after a first part of the body arrived, as Glance does mid-upload.
      let received = 0;
      request.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received >= 65536 && !response.headersSent && !request.socket.destroyed) reply();
      });
      request.on('end', () => {
        if (!response.headersSent && !request.socket.destroyed) reply();
      });
    } else if (route === '/v2/images' && request.method === 'POST') {
      void read(request).then(() =>
        response.writeHead(409, { 'content-type': 'text/plain' }).end(`Conflict: ${request.headers['x-auth-token']}`),
      );
    } else if (route.startsWith('/v2/images/unauthorized')) {
      response.writeHead(401, { 'content-type': 'text/html' }).end('<html><h1>401 Unauthorized</h1></html>');
    } else if (route.startsWith('/v2/images/')) {
      // A 404 for the lookup a 409 leads to; a 500 with a long HTML body for anything else.
      if (request.method === 'GET' && route === `/v2/images/${imageId}`) response.writeHead(404).end();
      else response.writeHead(500, { 'content-type': 'text/html' }).end(`<h1>Oops</h1>${'x'.repeat(5000)}`);
    } else {
      response.writeHead(404).end();
    }
  }

  const client = (servicePassword = password) =>
    new GlanceClient(
      loadConfig({
        LIBVIRT_VIRT_TYPE: 'qemu',
        GLANCE_URL: url,
        GLANCE_AUTH: 'keystone',
        KEYSTONE_URL: `${url}/v3`,
        GLANCE_SERVICE_USERNAME: 'vm-shelve',
        GLANCE_SERVICE_PASSWORD: servicePassword,
        GLANCE_SERVICE_PROJECT: 'service',
      }).glance,
    );

  beforeAll(async () => {
    server = createServer(answer);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('a 500 with a long HTML body: method, path, status and a short excerpt; retryable', async () => {
    const failure = await failureOf(client().getImage(owner, 'broken'));
    expect(failure.message).toMatch(
      /^Glance show image broken failed: HTTP 500: Oops x+… \(GET \/v2\/images\/broken\)$/,
    );
    expect(failure.message.length).toBeLessThan(450);
    expect(failure.nonRetryable).toBe(false);
    expect(failure.cause).toBeUndefined();
    expect(failure.details).toEqual([{ status: 500, method: 'GET', path: '/v2/images/broken', code: null }]);
    expectClean(everything(failure));
    expectClean(logged({ error: failure, durationMs: 3 }));
  });

  it('an upload refused mid-stream with a 500: no guest bytes and no token anywhere', async () => {
    const failure = await failureOf(
      client().uploadImageData(owner, imageId, Readable.from([guestData, guestData]), 2 * guestData.length),
    );
    expect(failure.message).toContain(`(PUT /v2/images/${imageId}/file)`);
    expect(failure.nonRetryable).toBe(false);
    expectClean(everything(failure));
    expectClean(logged({ error: failure }));
    expectClean(logged({ err: failure }));
  });

  it('a connection reset mid-upload: the network error code; retryable', async () => {
    const failure = await failureOf(
      client().uploadImageData(owner, 'reset', Readable.from([guestData, guestData]), 2 * guestData.length),
    );
    expect(failure.message).toMatch(
      /^Glance upload of image reset failed: .*(ECONNRESET|EPIPE|socket hang up).* \(PUT \/v2\/images\/reset\/file\)$/,
    );
    expect(failure.nonRetryable).toBe(false);
    expect(failure.details).toEqual([
      {
        status: null,
        method: 'PUT',
        path: '/v2/images/reset/file',
        code: expect.stringMatching(/^(ECONNRESET|EPIPE)$/),
      },
    ]);
    expectClean(everything(failure));
    expectClean(logged({ error: failure }));
  });

  it('a 409 whose answer echoes the token: the token is cut out; retryable', async () => {
    const failure = await failureOf(
      client().createImage(owner, {
        id: imageId,
        name: 'x',
        owner: owner.projectId,
        visibility: 'private',
        disk_format: 'qcow2',
        container_format: 'bare',
      }),
    );
    expect(failure.message).toBe(
      `Glance create image ${imageId} failed: HTTP 409: Conflict: [token] (POST /v2/images)`,
    );
    expect(failure.nonRetryable).toBe(false);
    expectClean(everything(failure));
  });

  it('a 401 for a new token: no retry, and not retryable; for a cached one: one new token and one retry', async () => {
    const glance = client();
    const before = authentications;
    const fresh = await failureOf(glance.getImage(owner, 'unauthorized'));
    expect(fresh.message).toBe(
      'Glance show image unauthorized failed: HTTP 401: 401 Unauthorized (GET /v2/images/unauthorized)',
    );
    expect(fresh.nonRetryable).toBe(true);
    expect(authentications - before).toBe(1);

    expect(await glance.getImage(owner, 'ok')).toEqual({ id: 'ok' });
    const cached = await failureOf(glance.getImage(owner, 'unauthorized'));
    expect(cached.nonRetryable).toBe(true);
    // The cached token was refused, so a new one was fetched and the request sent once more.
    expect(authentications - before).toBe(2);
    expect(seenTokens.slice(-2)).toEqual([tokens.at(-2), tokens.at(-1)]);
    expectClean(everything(cached));
    expectClean(logged({ error: cached }));
  });

  it('a 401 on an upload with a cached token: the stream is spent, so the failure is retryable', async () => {
    const glance = client();
    expect(await glance.getImage(owner, 'ok')).toEqual({ id: 'ok' });
    const before = authentications;
    const failure = await failureOf(
      glance.uploadImageData(owner, 'unauthorized', Readable.from([guestData]), guestData.length),
    );
    expect(failure.message).toBe(
      'Glance upload of image unauthorized failed: HTTP 401: the service token was refused; a new one is used on the next attempt (PUT /v2/images/unauthorized/file)',
    );
    expect(failure.nonRetryable).toBe(false);
    expect(authentications).toBe(before);
    // The refused token is forgotten: the next call authenticates again.
    expect(await glance.getImage(owner, 'ok')).toEqual({ id: 'ok' });
    expect(authentications).toBe(before + 1);
    expectClean(everything(failure));
  });

  it('wrong service credentials: a clear, non-retryable failure without the password', async () => {
    const glance = client('wrong');
    const failure = await failureOf(glance.getImage(owner, 'ok'));
    expect(failure.message).toBe(
      'Glance show image ok failed: Keystone refused the service credentials for user vm-shelve (domain Default, project service) (HTTP 401)',
    );
    expect(failure.nonRetryable).toBe(true);
    expect(everything(failure)).not.toContain('wrong');
  });

  it("the log's second net: a raw AxiosError with a token header and a Buffer body logs neither", async () => {
    const token = newToken();
    tokens.push(token);
    const error = await axios
      .put(`${url}/v2/images/${imageId}/file`, guestData, { headers: { 'X-Auth-Token': token } })
      .catch((error: unknown) => error);
    expect(isAxiosError(error)).toBe(true);
    // As the failure used to be made: the AxiosError as the cause of an ApplicationFailure.
    const failure = ApplicationFailure.create({ message: 'Glance upload failed', cause: error as Error });
    for (const fields of [{ error: failure }, { err: failure }, { err: error }, { nested: { deeper: { error } } }]) {
      expectClean(logged(fields));
    }
    const line = JSON.parse(logged({ error: failure, headers: { 'X-Auth-Token': token }, password })) as {
      error: { cause: { config: string; message: string } };
      headers: string;
      password: string;
    };
    expect(line.error.cause.config).toBe('[redacted]');
    expect(line.error.cause.message).toBe('Request failed with status code 500');
    expect(line.headers).toBe('[redacted]');
    expect(line.password).toBe('[redacted]');
  });

  it('bytes and long arrays are described, not written', () => {
    const line = JSON.parse(
      logged({ chunk: guestData, view: new Uint8Array(100), list: Array.from({ length: 1000 }, (_, i) => i) }),
    ) as Record<string, unknown>;
    expect(line).toMatchObject({
      chunk: '[Buffer of 1048576 bytes]',
      view: '[Uint8Array of 100 bytes]',
      list: '[Array of 1000 items]',
    });
  });
});
