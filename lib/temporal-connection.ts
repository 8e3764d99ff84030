// How every process reaches Temporal: TLS, a client certificate (mTLS) and an API key, read once
// from the environment, and the one set of connection options built from them for the workers'
// NativeConnection and the clients' Connection alike. Whoever reaches the Temporal frontend can
// start any action and terminate any workflow (docs/security.md, "Temporal is a trust boundary"), so a real
// deployment puts it behind mTLS or API keys.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import tls from 'node:tls';
import { inspect } from 'node:util';
import type { Config } from './config.js';

/** A value no log line may show: JSON, util.inspect and String() give [redacted]; reveal() the value. */
export class Secret<T> {
  readonly #value: T;

  constructor(value: T) {
    this.#value = value;
  }

  reveal(): T {
    return this.#value;
  }

  toJSON(): string {
    return '[redacted]';
  }

  toString(): string {
    return '[redacted]';
  }

  [inspect.custom](): string {
    return 'Secret([redacted])';
  }
}

export interface TemporalTls {
  /** The CA bundle to trust (TEMPORAL_TLS_CA); the system's CAs when absent. */
  serverRootCACertificate?: Buffer;
  /** Mutual TLS: the client certificate and its key (TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY). */
  clientCertPair?: { crt: Buffer; key: Secret<Buffer> };
  /** The name the server's certificate must carry, also sent as SNI (TEMPORAL_TLS_SERVER_NAME). */
  serverNameOverride?: string;
}

export interface TemporalSecurity {
  /** TLS to the frontend, or false for plaintext (the local stack's dev server). */
  tls: TemporalTls | false;
  /** Sent with every call as "Authorization: Bearer <key>" (TEMPORAL_API_KEY). */
  apiKey: Secret<string> | undefined;
}

const TLS_FILES = ['TEMPORAL_TLS_CA', 'TEMPORAL_TLS_CERT', 'TEMPORAL_TLS_KEY'] as const;

/** A PEM file named by `variable`, read now; errors name the variable and the path, never the contents. */
function pemFile(env: NodeJS.ProcessEnv, variable: (typeof TLS_FILES)[number], what: 'certificate' | 'key'): Buffer {
  const file = env[variable]!;
  let contents: Buffer;
  try {
    contents = readFileSync(file);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
    throw new Error(`${variable}: cannot read '${file}': ${reason}`);
  }
  const pem = what === 'key' ? /-----BEGIN [A-Z ]*PRIVATE KEY-----/ : /-----BEGIN CERTIFICATE-----/;
  if (!pem.test(contents.toString('latin1'))) {
    throw new Error(`${variable}: '${file}' holds no PEM ${what === 'key' ? 'private key' : 'certificate'}`);
  }
  return contents;
}

/**
 * TLS and the API key from the environment: TEMPORAL_TLS=true (TLS with the system's CAs),
 * TEMPORAL_TLS_CA, TEMPORAL_TLS_CERT with TEMPORAL_TLS_KEY, TEMPORAL_TLS_SERVER_NAME, and
 * TEMPORAL_API_KEY, which implies TLS (as Temporal Cloud requires) unless TEMPORAL_TLS=false.
 */
export function temporalSecurity(env: NodeJS.ProcessEnv): TemporalSecurity {
  const flag = env.TEMPORAL_TLS || undefined;
  if (flag !== undefined && flag !== 'true' && flag !== 'false') {
    throw new Error(`TEMPORAL_TLS must be true or false, got '${flag}'`);
  }
  const apiKey = env.TEMPORAL_API_KEY ? new Secret(env.TEMPORAL_API_KEY) : undefined;
  const tlsSettings = [...TLS_FILES, 'TEMPORAL_TLS_SERVER_NAME'].filter((name) => env[name]);
  if (flag === 'false') {
    if (tlsSettings.length > 0) {
      throw new Error(`TEMPORAL_TLS=false contradicts ${tlsSettings.join(', ')}: unset one or the other`);
    }
    return { tls: false, apiKey };
  }
  if (flag === undefined && tlsSettings.length === 0 && !apiKey) return { tls: false, apiKey };
  if (Boolean(env.TEMPORAL_TLS_CERT) !== Boolean(env.TEMPORAL_TLS_KEY)) {
    throw new Error(
      env.TEMPORAL_TLS_CERT
        ? "TEMPORAL_TLS_CERT needs TEMPORAL_TLS_KEY, the client certificate's private key"
        : 'TEMPORAL_TLS_KEY needs TEMPORAL_TLS_CERT, the client certificate it is the key of',
    );
  }
  const tls: TemporalTls = {};
  if (env.TEMPORAL_TLS_CA) tls.serverRootCACertificate = pemFile(env, 'TEMPORAL_TLS_CA', 'certificate');
  if (env.TEMPORAL_TLS_CERT) {
    tls.clientCertPair = {
      crt: pemFile(env, 'TEMPORAL_TLS_CERT', 'certificate'),
      key: new Secret(pemFile(env, 'TEMPORAL_TLS_KEY', 'key')),
    };
  }
  if (env.TEMPORAL_TLS_SERVER_NAME) tls.serverNameOverride = env.TEMPORAL_TLS_SERVER_NAME;
  return { tls, apiKey };
}

/** The SDK's TLS settings, as both `Connection` and `NativeConnection` take them. */
export interface SdkTlsConfig {
  serverRootCACertificate?: Buffer;
  clientCertPair?: { crt: Buffer; key: Buffer };
  serverNameOverride?: string;
}

/**
 * The connection options of every Temporal connection (`NativeConnection.connect` and
 * `Connection.connect` take them as they are): the address, TLS or plaintext, and the API key.
 */
export function temporalConnectionOptions(temporal: Config['temporal']): {
  address: string;
  tls: SdkTlsConfig | false;
  apiKey?: string;
} {
  const { tls, apiKey } = temporal;
  return {
    address: temporal.address,
    tls: tls && {
      ...(tls.serverRootCACertificate ? { serverRootCACertificate: tls.serverRootCACertificate } : {}),
      ...(tls.clientCertPair
        ? { clientCertPair: { crt: tls.clientCertPair.crt, key: tls.clientCertPair.key.reveal() } }
        : {}),
      ...(tls.serverNameOverride ? { serverNameOverride: tls.serverNameOverride } : {}),
    },
    ...(apiKey ? { apiKey: apiKey.reveal() } : {}),
  };
}

/** How a connection is made, for messages: never a key. */
export function describeTemporalConnection(temporal: Config['temporal']): string {
  const how = !temporal.tls
    ? 'plaintext'
    : temporal.tls.clientCertPair
      ? 'mutual TLS'
      : 'TLS without a client certificate';
  return `${temporal.address}, ${how}${temporal.apiKey ? ', with an API key' : ''}`;
}

/**
 * Why a TLS handshake with the frontend fails, if it does, by making one with the same settings:
 * gRPC's client reports only a missed deadline. A client certificate refused under TLS 1.3 is an
 * alert after the handshake, so the probe waits a moment for it.
 */
export function tlsRefusal(temporal: Config['temporal'], timeoutMs = 3000): Promise<string | undefined> {
  const settings = temporal.tls;
  if (!settings) return Promise.resolve(undefined);
  const colon = temporal.address.lastIndexOf(':');
  const host = (colon > 0 ? temporal.address.slice(0, colon) : temporal.address).replace(/^\[|\]$/g, '');
  const port = colon > 0 ? Number(temporal.address.slice(colon + 1)) : 7233;
  const name = settings.serverNameOverride;
  return new Promise((resolve) => {
    const socket = tls.connect({
      host,
      port,
      servername: name ?? (isIP(host) ? undefined : host),
      ca: settings.serverRootCACertificate,
      cert: settings.clientCertPair?.crt,
      key: settings.clientCertPair?.key.reveal(),
      ALPNProtocols: ['h2'],
      ...(name
        ? { checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => tls.checkServerIdentity(name, cert) }
        : {}),
    });
    let settled = false;
    const done = (reason: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      socket.destroy();
      resolve(reason);
    };
    const deadline = setTimeout(() => done(undefined), timeoutMs);
    socket.once('error', (error) => {
      const reason = error.message.trim();
      done(/wrong version number/.test(reason) ? `${reason} (does the server speak TLS at all?)` : reason);
    });
    socket.once('secureConnect', () => setTimeout(() => done(undefined), 1000).unref());
  });
}

/**
 * The error of a connection that could not be made: where to, how (never a key), and why,
 * including a TLS refusal the SDK's message would not show.
 */
export async function temporalConnectionError(temporal: Config['temporal'], error: unknown): Promise<Error> {
  const reason = error instanceof Error ? error.message : String(error);
  const refusal = await tlsRefusal(temporal).catch(() => undefined);
  return new Error(
    `cannot connect to Temporal at ${describeTemporalConnection(temporal)}: ${refusal ? `TLS refused: ${refusal}; ` : ''}${reason}`,
    { cause: error },
  );
}
