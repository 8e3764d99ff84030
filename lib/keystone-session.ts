// A Keystone v3 session for service credentials, as keystoneauth keeps one: it authenticates
// (POST /v3/auth/tokens, the token in the X-Subject-Token header), keeps the token until shortly
// before it expires, and authenticates again when told the token was refused. Neither the
// password, the secret nor a token ever goes into an error message or a log line.

/** Password credentials of a service user, scoped to a project; or an application credential. */
export type KeystoneCredentials =
  | {
      kind: 'password';
      userName: string;
      password: string;
      userDomain: string;
      projectName: string;
      projectDomain: string;
    }
  | { kind: 'applicationCredential'; id: string; secret: string };

/** A token is renewed this long before it expires (keystoneauth: 120 s), or at half its life if shorter. */
const RENEW_BEFORE_MS = 120_000;
const KEYSTONE_TIMEOUT_MS = 10_000;

/** Keystone refused the credentials or could not be reached; the message names who, never a secret. */
export class KeystoneAuthError extends Error {
  override readonly name = 'KeystoneAuthError';
  constructor(
    message: string,
    /** Keystone's HTTP status, or undefined when it was not reached. */
    readonly status: number | undefined,
    /** False when no retry can help: Keystone refused the credentials (4xx but 408 and 429). */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

interface Token {
  value: string;
  /** When to stop using it: a little before its expires_at. */
  renewAt: number;
}

/** Who the credentials are, for messages: never the password or secret. */
export function describeCredentials(credentials: KeystoneCredentials): string {
  return credentials.kind === 'password'
    ? `user ${credentials.userName} (domain ${credentials.userDomain}, project ${credentials.projectName})`
    : `application credential ${credentials.id}`;
}

export class KeystoneSession {
  private current: Token | undefined;
  private pending: Promise<Token> | undefined;

  constructor(
    /** Keystone's v3 endpoint, e.g. http://127.0.0.1:5000/v3. */
    private readonly keystoneUrl: string,
    private readonly credentials: KeystoneCredentials,
  ) {}

  /**
   * A valid token: the cached one, or a new one when there is none or it expires soon.
   * `renewed` is true when this call waited for a new authentication.
   */
  async token(): Promise<{ token: string; renewed: boolean }> {
    if (this.current && Date.now() < this.current.renewAt) return { token: this.current.value, renewed: false };
    this.current = undefined;
    // Callers at the same moment share one authentication.
    this.pending ??= this.authenticate().finally(() => (this.pending = undefined));
    const token = await this.pending;
    this.current = token;
    return { token: token.value, renewed: true };
  }

  /** Forgets `token` (a service refused it), so that the next call authenticates again. */
  invalidate(token: string): void {
    if (this.current?.value === token) this.current = undefined;
  }

  private authRequest(): unknown {
    const { credentials } = this;
    if (credentials.kind === 'applicationCredential') {
      return {
        auth: {
          identity: {
            methods: ['application_credential'],
            application_credential: { id: credentials.id, secret: credentials.secret },
          },
        },
      };
    }
    return {
      auth: {
        identity: {
          methods: ['password'],
          password: {
            user: {
              name: credentials.userName,
              domain: { name: credentials.userDomain },
              password: credentials.password,
            },
          },
        },
        scope: { project: { name: credentials.projectName, domain: { name: credentials.projectDomain } } },
      },
    };
  }

  private async authenticate(): Promise<Token> {
    const who = describeCredentials(this.credentials);
    let response: Response;
    try {
      response = await fetch(`${this.keystoneUrl}/auth/tokens?nocatalog`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(this.authRequest()),
        signal: AbortSignal.timeout(KEYSTONE_TIMEOUT_MS),
      });
    } catch (error) {
      const cause = error instanceof Error ? error.cause : undefined;
      const code =
        (cause && typeof cause === 'object' && 'code' in cause && String(cause.code)) ||
        (error instanceof Error ? error.name : 'error');
      throw new KeystoneAuthError(
        `Keystone at ${this.keystoneUrl} could not be reached to authenticate ${who} (${code})`,
        undefined,
        true,
      );
    }
    // Keystone's error bodies hold no secret, but nothing here needs them either.
    const body = (await response.json().catch(() => ({}))) as { token?: { expires_at?: string } };
    const value = response.headers.get('x-subject-token');
    if (response.status === 401 || response.status === 403) {
      throw new KeystoneAuthError(
        `Keystone refused the service credentials for ${who} (HTTP ${response.status})`,
        response.status,
        false,
      );
    }
    if (!response.ok || !value) {
      const status = response.status;
      throw new KeystoneAuthError(
        `Keystone did not issue a token for ${who} (HTTP ${status}${response.ok ? ', no X-Subject-Token' : ''})`,
        status,
        !(status >= 400 && status < 500 && status !== 408 && status !== 429),
      );
    }
    const now = Date.now();
    const expiresAt = Date.parse(body.token?.expires_at ?? '');
    // No expiry given: treat it as Keystone's default hour.
    const life = Number.isFinite(expiresAt) ? expiresAt - now : 3_600_000;
    return { value, renewAt: now + Math.max(0, Math.min(life - RENEW_BEFORE_MS, life / 2)) };
  }
}
