// Temporal behind mutual TLS, for real. The stack's dev server (`temporal server start-dev`,
// CLI 1.5.1) has no TLS flags, so a TLS-terminating proxy stands in front of it here, demanding
// a client certificate from a CA made with openssl. Through it: the workers (connectWorker), the
// API's client and the stub compute host build, shelve and report progress, all from the
// configuration's TEMPORAL_TLS_* settings; without a client certificate the connection is refused.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import net from 'node:net';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApi } from '../../api/server.js';
import { type Config, loadConfig } from '../../lib/config.js';
import { connectClient } from '../../lib/temporal-client.js';
import { connectWorker } from '../../workers/runtime.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost, testOwner } from '../support/stub-host.js';

const run = promisify(execFile);

const OPENSSL_CONFIG = `
[req]
distinguished_name = dn
prompt = no
[dn]
CN = vm-shelve test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`. */
async function makeCertificates(dir: string) {
  const file = (name: string) => path.join(dir, name);
  await writeFile(file('openssl.cnf'), OPENSSL_CONFIG);
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    ...['req', '-x509', '-config', file('openssl.cnf'), '-extensions', 'ca', ...newKey],
    ...['-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=vm-shelve test CA'],
  ]);
  for (const [name, subject] of [
    ['server', '/CN=127.0.0.1'],
    ['client', '/CN=vm-shelve-test-worker'],
  ] as const) {
    await run('openssl', [
      ...['req', '-new', '-config', file('openssl.cnf'), ...newKey],
      ...['-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject],
    ]);
    await run('openssl', [
      ...['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key')],
      ...['-set_serial', `0x${randomUUID().replaceAll('-', '')}`, '-days', '1', '-out', file(`${name}.pem`)],
      ...['-extfile', file('openssl.cnf'), '-extensions', name],
    ]);
  }
  return { ca: file('ca.pem'), cert: file('client.pem'), key: file('client.key'), dir };
}

interface TlsProxy {
  address: string;
  /** The subject (CN) of each client certificate the proxy accepted. */
  clients: string[];
  /** Why the proxy refused each TLS client it refused. */
  refusals: string[];
  close(): Promise<void>;
}

/**
 * Terminates mutual TLS on 127.0.0.1 and pipes each connection to the plaintext `upstream`, as a
 * load balancer in front of a Temporal frontend would. gRPC needs ALPN h2.
 */
async function startTlsProxy(certificates: { ca: string; dir: string }, upstream: string): Promise<TlsProxy> {
  const [host, port] = [
    upstream.slice(0, upstream.lastIndexOf(':')),
    Number(upstream.slice(upstream.lastIndexOf(':') + 1)),
  ];
  const clients: string[] = [];
  const refusals: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    {
      key: await readFile(path.join(certificates.dir, 'server.key')),
      cert: await readFile(path.join(certificates.dir, 'server.pem')),
      ca: await readFile(certificates.ca),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ['h2'],
    },
    (client) => {
      clients.push(String(client.getPeerCertificate().subject.CN));
      const frontend = net.connect({ host, port });
      for (const socket of [client, frontend]) {
        sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => {
          sockets.delete(socket);
          client.destroy();
          frontend.destroy();
        });
      }
      client.pipe(frontend).pipe(client);
    },
  );
  server.on('tlsClientError', (error) => refusals.push(error.message));
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    clients,
    refusals,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('Temporal behind mutual TLS', () => {
  let certificates: Awaited<ReturnType<typeof makeCertificates>>;
  let proxy: TlsProxy;
  let tlsSettings: NodeJS.ProcessEnv;
  let stack: TestStack | undefined;
  let stub: StubHost | undefined;
  let api: FastifyInstance | undefined;

  beforeAll(async () => {
    certificates = await makeCertificates(await mkdtemp(path.join(tmpdir(), 'vm-shelve-tls-')));
    proxy = await startTlsProxy(certificates, loadConfig().temporal.address);
    tlsSettings = {
      TEMPORAL_ADDRESS: proxy.address,
      TEMPORAL_TLS_CA: certificates.ca,
      TEMPORAL_TLS_CERT: certificates.cert,
      TEMPORAL_TLS_KEY: certificates.key,
    };
  });

  afterAll(async () => {
    await api?.close();
    await stub?.stop();
    await stack?.stop();
    await proxy?.close();
    if (certificates) await rm(certificates.dir, { recursive: true, force: true });
  });

  const configWith = (settings: NodeJS.ProcessEnv): Config => loadConfig({ ...process.env, ...settings });

  it("lets a client and a worker's connection, built from the configuration, describe the namespace", async () => {
    const config = configWith(tlsSettings);
    const { namespace } = config.temporal;
    const client = await connectClient(config);
    try {
      const { namespaceInfo } = await client.workflowService.describeNamespace({ namespace });
      expect(namespaceInfo?.name).toBe(namespace);
    } finally {
      await client.close();
    }
    const worker = await connectWorker(config);
    try {
      const { namespaceInfo } = await worker.workflowService.describeNamespace({ namespace });
      expect(namespaceInfo?.name).toBe(namespace);
    } finally {
      await worker.close();
    }
    expect(proxy.clients.length).toBeGreaterThanOrEqual(2);
    expect(new Set(proxy.clients)).toEqual(new Set(['vm-shelve-test-worker']));
  });

  it('lets the Temporal CLI through with the same variables, which are its own', async () => {
    const binary = process.env.TEMPORAL_CLI ?? path.join(homedir(), '.cache/vm-shelve/temporal-cli-1.5.1/temporal');
    const { namespace } = configWith(tlsSettings).temporal;
    const env = { ...process.env, ...tlsSettings };
    const { stdout } = await run(
      binary,
      ['operator', 'namespace', 'describe', '--namespace', namespace, '--output', 'json', '--address', proxy.address],
      { env },
    );
    expect(JSON.parse(stdout)).toMatchObject({ namespaceInfo: { name: namespace } });
  });

  it('refuses a connection without a client certificate, with an error that says so', async () => {
    const config = configWith({ ...tlsSettings, TEMPORAL_TLS_CERT: '', TEMPORAL_TLS_KEY: '' });
    expect(config.temporal.tls).toMatchObject({ serverRootCACertificate: expect.any(Buffer) });
    const refusalsBefore = proxy.refusals.length;
    // gRPC's own message is a missed deadline: the error says where, how, and what TLS refused.
    const refused = new RegExp(
      `^cannot connect to Temporal at ${proxy.address}, TLS without a client certificate: ` +
        'TLS refused: .*alert certificate required',
    );
    await expect(connectClient(config)).rejects.toThrow(refused);
    await expect(connectWorker(config)).rejects.toThrow(refused);
    expect(proxy.refusals.slice(refusalsBefore).join('\n')).toMatch(/peer did not return a certificate/);
  });

  it('sends TEMPORAL_API_KEY as a bearer token, over TLS, from clients and workers alike', async () => {
    // A stand-in frontend that answers every call UNAUTHENTICATED, after noting what it was sent.
    const authorizations: (string | undefined)[] = [];
    const frontend = http2.createSecureServer({
      key: await readFile(path.join(certificates.dir, 'server.key')),
      cert: await readFile(path.join(certificates.dir, 'server.pem')),
    });
    frontend.on('stream', (stream, headers) => {
      authorizations.push(headers.authorization);
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '16', 'grpc-message': 'bad key' },
        { endStream: true },
      );
    });
    await new Promise<void>((resolve) => frontend.listen(0, '127.0.0.1', resolve));
    try {
      const config = configWith({
        TEMPORAL_ADDRESS: `127.0.0.1:${(frontend.address() as net.AddressInfo).port}`,
        TEMPORAL_TLS_CA: certificates.ca,
        TEMPORAL_API_KEY: 'test-api-key-1234',
      });
      const failures = [
        await connectClient(config).then(
          () => 'connected',
          (error: Error) => error.message,
        ),
        await connectWorker(config).then(
          () => 'connected',
          (error: Error) => error.message,
        ),
      ];
      for (const failure of failures) {
        expect(failure).toMatch(
          /^cannot connect to Temporal at 127\.0\.0\.1:\d+, TLS without a client certificate, with an API key: /,
        );
        expect(failure).not.toContain('test-api-key');
      }
      expect(authorizations.length).toBeGreaterThanOrEqual(2);
      expect(new Set(authorizations)).toEqual(new Set(['Bearer test-api-key-1234']));
    } finally {
      frontend.close();
    }
  });

  it('runs actions end to end through it: workers, the stub host, the API and its progress', async () => {
    // A task queue of its own, so that only this test's workers (all behind the proxy) take its work.
    stack = await startTestStack({
      ...tlsSettings,
      CONDUCTOR_TASK_QUEUE: `tls-${randomUUID()}`,
      SHELVED_OFFLOAD_TIME: '-1',
    });
    stub = await startStubHost(stack);
    const { uuid } = await stub.buildInstance();
    api = buildApi({ config: stack.config, pool: stack.pool, client: stack.client });
    const endpoint = await api.listen({ host: '127.0.0.1', port: 0 });
    const token = `${testOwner.userId}:${testOwner.projectId}`;
    const accepted = await fetch(`${endpoint}/v2.1/servers/${uuid}/action`, {
      method: 'POST',
      headers: { 'x-auth-token': token, 'content-type': 'application/json' },
      body: JSON.stringify({ shelve: null }),
    });
    expect(accepted.status).toBe(202);
    const requestId = accepted.headers.get('x-openstack-request-id');
    let action: { message: string | null; progress: unknown } | undefined;
    for (let i = 0; i < 300; i++) {
      const response = await fetch(`${endpoint}/v2.1/servers/${uuid}/os-instance-actions/${requestId}`, {
        headers: { 'x-auth-token': token },
      });
      action = ((await response.json()) as { instanceAction: typeof action }).instanceAction;
      if (action?.progress === null) break;
      await sleep(100);
    }
    expect(action).toMatchObject({ message: null, progress: null });
    const server = await fetch(`${endpoint}/v2.1/servers/${uuid}`, { headers: { 'x-auth-token': token } });
    expect(((await server.json()) as { server: unknown }).server).toMatchObject({ status: 'SHELVED' });
  });
});
