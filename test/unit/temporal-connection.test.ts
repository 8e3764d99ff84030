// TLS, mTLS and API keys for Temporal, as lib/config.ts reads them: files read once, errors that
// name the variable, and secrets that no log line can show.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { temporalConnectionOptions } from '../../lib/temporal-connection.js';

const dir = mkdtempSync(path.join(tmpdir(), 'vm-shelve-tls-unit-'));
const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nvery-secret-key-material\n-----END PRIVATE KEY-----\n';
const file = (name: string, contents: string) => {
  const at = path.join(dir, name);
  writeFileSync(at, contents);
  return at;
};
const ca = file('ca.pem', CERT);
const cert = file('client.pem', CERT);
const key = file('client.key', KEY);
const base = { LIBVIRT_VIRT_TYPE: 'qemu' };

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Temporal connection settings', () => {
  it('connects in plaintext unless told otherwise, as to the local dev server', () => {
    const config = loadConfig(base);
    expect(temporalConnectionOptions(config.temporal)).toEqual({ address: '127.0.0.1:7233', tls: false });
  });

  it('reads the CA, the client certificate and its key once, at load, for mutual TLS', () => {
    const config = loadConfig({
      ...base,
      TEMPORAL_ADDRESS: 'temporal.example:7233',
      TEMPORAL_TLS_CA: ca,
      TEMPORAL_TLS_CERT: cert,
      TEMPORAL_TLS_KEY: key,
      TEMPORAL_TLS_SERVER_NAME: 'frontend.temporal.example',
    });
    rmSync(ca); // Read at load: the connection needs the files no more.
    file('ca.pem', CERT);
    expect(temporalConnectionOptions(config.temporal)).toEqual({
      address: 'temporal.example:7233',
      tls: {
        serverRootCACertificate: Buffer.from(CERT),
        clientCertPair: { crt: Buffer.from(CERT), key: Buffer.from(KEY) },
        serverNameOverride: 'frontend.temporal.example',
      },
    });
  });

  it('uses TLS with the system CAs for TEMPORAL_TLS=true, and for an API key unless TEMPORAL_TLS=false', () => {
    expect(temporalConnectionOptions(loadConfig({ ...base, TEMPORAL_TLS: 'true' }).temporal).tls).toEqual({});
    expect(temporalConnectionOptions(loadConfig({ ...base, TEMPORAL_API_KEY: 'k-123' }).temporal)).toEqual({
      address: '127.0.0.1:7233',
      tls: {},
      apiKey: 'k-123',
    });
    expect(
      temporalConnectionOptions(loadConfig({ ...base, TEMPORAL_API_KEY: 'k-123', TEMPORAL_TLS: 'false' }).temporal),
    ).toEqual({ address: '127.0.0.1:7233', tls: false, apiKey: 'k-123' });
  });

  it('refuses what it cannot use, naming the variable', () => {
    const missing = path.join(dir, 'nowhere.pem');
    const cases: [NodeJS.ProcessEnv, string][] = [
      [{ TEMPORAL_TLS_CA: missing }, `TEMPORAL_TLS_CA: cannot read '${missing}': no such file`],
      [{ TEMPORAL_TLS_CERT: cert }, "TEMPORAL_TLS_CERT needs TEMPORAL_TLS_KEY, the client certificate's private key"],
      [{ TEMPORAL_TLS_KEY: key }, 'TEMPORAL_TLS_KEY needs TEMPORAL_TLS_CERT'],
      [{ TEMPORAL_TLS_CERT: cert, TEMPORAL_TLS_KEY: cert }, `TEMPORAL_TLS_KEY: '${cert}' holds no PEM private key`],
      [{ TEMPORAL_TLS_CERT: key, TEMPORAL_TLS_KEY: key }, `TEMPORAL_TLS_CERT: '${key}' holds no PEM certificate`],
      [{ TEMPORAL_TLS: 'yes' }, "TEMPORAL_TLS must be true or false, got 'yes'"],
      [{ TEMPORAL_TLS: 'false', TEMPORAL_TLS_CA: ca }, 'TEMPORAL_TLS=false contradicts TEMPORAL_TLS_CA'],
    ];
    for (const [env, message] of cases) expect(() => loadConfig({ ...base, ...env })).toThrow(message);
    // The error about a bad key file names it, never its contents.
    expect(() => loadConfig({ ...base, TEMPORAL_TLS_CERT: key, TEMPORAL_TLS_KEY: key })).not.toThrow(/very-secret/);
  });

  it('never shows the key or the API key in a log line, JSON or util.inspect', () => {
    const { temporal } = loadConfig({
      ...base,
      TEMPORAL_TLS_CA: ca,
      TEMPORAL_TLS_CERT: cert,
      TEMPORAL_TLS_KEY: key,
      TEMPORAL_API_KEY: 'api-key-that-must-not-leak',
    });
    for (const shown of [JSON.stringify(temporal), inspect(temporal, { depth: 10 }), `${temporal.apiKey}`]) {
      expect(shown).not.toContain('very-secret-key-material');
      expect(shown).not.toContain('api-key-that-must-not-leak');
      expect(shown).toContain('redacted');
    }
  });
});
