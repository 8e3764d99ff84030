// The project's test guest (docs/guest.md): its image, built by scripts/guest-image, and its line
// protocol over the guest's serial console or a TCP connection to its address, as the tests, the
// demo and the benchmark speak it.
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

const repoDir = path.resolve(import.meta.dirname, '..');
let imageBuild: Promise<string> | undefined;

/**
 * Path of the guest's qcow2 image in the cache, built by scripts/guest-image on first use (once per
 * set of inputs; a minute or so the first time). Never write to it: boot an overlay.
 */
export function guestImage(): Promise<string> {
  imageBuild ??= promisify(execFile)('bash', [path.join(repoDir, 'scripts/guest-image')], {
    maxBuffer: 1 << 20,
  }).then(({ stdout }) => stdout.trim());
  return imageBuild;
}

/** The guest's readiness line on its consoles: `vm-shelve-guest ready <ip or none>`. */
export const readyLine = /^vm-shelve-guest ready (\S+)$/;
/** What the guest prints when the ACPI power button powers it off. */
export const powerOffLine = /^vm-shelve-guest power-off$/;
/** The TCP port of the guest's protocol. */
export const guestProtocolPort = 7;

/** A socket read as lines (\r dropped), with a way to wait for the next line that matches. */
export class LineChannel {
  private readonly lines: string[] = [];
  private partial = '';
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly socket: net.Socket,
    /** Every line received, for a test's log. */
    private readonly onLine?: (line: string) => void,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      const parts = (this.partial + chunk).split('\n');
      this.partial = parts.pop() ?? '';
      for (const raw of parts) {
        const line = raw.replace(/\r/g, '');
        this.onLine?.(line);
        this.lines.push(line);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  send(line: string): void {
    this.socket.write(`${line}\n`);
  }

  /**
   * The first unread line matching `pattern` (the lines before it are consumed, so kernel messages
   * or an echo on a console are skipped). Rejects after `timeoutMs` or when the socket closes.
   */
  async waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.lines.length > 0) {
        const line = this.lines.shift() as string;
        const match = pattern.exec(line);
        if (match) return match;
      }
      if (this.closed) throw new Error(`the guest's channel closed before a line matching ${pattern}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no line matching ${pattern} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Forgets the lines received so far (before a command whose answer must come after it). */
  drop(): void {
    this.lines.length = 0;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** How often a new connection attempt starts while the earlier ones get no answer. */
const ATTEMPT_INTERVAL_MS = 250;
/** Attempts kept in flight at most (4 s of them); the oldest is dropped for a new one. */
const ATTEMPTS_IN_FLIGHT = 16;

/**
 * Connects to a unix socket or TCP address, retrying while nobody listens yet. A new attempt
 * starts every 250 ms while earlier ones are still in flight: a SYN sent before the guest had its
 * address is resent by TCP only after 1 s (then 3 s), which would add that wait to a boot, while
 * an attempt given up at once would miss a guest slow to answer. The first attempt that connects
 * wins; the others are closed.
 */
export async function connectWithRetry(
  address: { path: string } | { host: string; port: number },
  timeoutMs: number,
): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  const attempts = new Map<net.Socket, Promise<net.Socket | null>>();
  let lastError: unknown = new Error(`no connection to ${JSON.stringify(address)} within ${timeoutMs} ms`);
  const pause = (ms: number) => new Promise<null>((resolve) => setTimeout(resolve, ms, null));
  try {
    for (;;) {
      const socket = net.connect(address);
      const attempt = once(socket, 'connect').then(
        () => socket,
        (error: unknown) => {
          lastError = error;
          attempts.delete(socket);
          socket.destroy();
          return null;
        },
      );
      attempts.set(socket, attempt);
      if (attempts.size > ATTEMPTS_IN_FLIGHT) {
        const [oldest] = attempts.keys();
        attempts.delete(oldest!);
        oldest!.destroy();
      }
      const connected = await Promise.race([...attempts.values(), pause(ATTEMPT_INTERVAL_MS)]);
      if (connected) {
        attempts.delete(connected);
        return connected;
      }
      if (Date.now() > deadline) throw lastError;
      // Refused at once (nobody listens yet): wait a little rather than ask again at once.
      if (!attempts.has(socket)) await pause(100);
    }
  } finally {
    for (const socket of attempts.keys()) socket.destroy();
  }
}

/** The guest's protocol (docs/guest.md) over one line channel: its serial console or a TCP connection. */
export class GuestProtocol {
  constructor(
    private readonly channel: LineChannel,
    private readonly timeoutMs = 30_000,
  ) {}

  private async ask(command: string, answer: RegExp): Promise<RegExpMatchArray> {
    this.channel.drop();
    this.channel.send(command);
    const match = await this.channel.waitFor(new RegExp(`${answer.source}|^error (.*)$`), this.timeoutMs);
    if (match[0].startsWith('error ')) throw new Error(`guest: ${match[0]} (to ${command.slice(0, 40)})`);
    return match;
  }

  /** The guest's address, or 'none'. */
  async ping(): Promise<string> {
    return (await this.ask('ping', /^pong (\S+)$/))[1] as string;
  }

  /** Writes a file on the guest's /data and syncs it; returns the sha256 the guest computed. */
  async write(name: string, content: Buffer): Promise<string> {
    return (await this.ask(`write ${name} ${content.toString('base64')}`, /^ok ([0-9a-f]{64})$/))[1] as string;
  }

  /** Closes the channel (for TCP, the guest's protocol process for this connection ends). */
  close(): void {
    this.channel.close();
  }

  /** Whether the guest can open a TCP connection to `ip`:`port` (within 2 s). */
  async probe(ip: string, port: number): Promise<'open' | 'closed'> {
    return (await this.ask(`probe ${ip} ${port}`, /^(open|closed)$/))[1] as 'open' | 'closed';
  }

  /** A file of the guest's /data, or null when it has none of that name. */
  async read(name: string): Promise<Buffer | null> {
    const match = await this.ask(`read ${name}`, /^(missing|[A-Za-z0-9+/]+=*|=)$/);
    return match[1] === 'missing' ? null : Buffer.from(match[1] as string, 'base64');
  }
}

/**
 * The guest's protocol over TCP at `host`, once it answers there (a boot under TCG takes
 * seconds): `connectMs` to wait for that, `replyMs` for each answer after.
 */
export async function connectGuest(host: string, connectMs: number, replyMs = 10_000): Promise<GuestProtocol> {
  const socket = await connectWithRetry({ host, port: guestProtocolPort }, connectMs);
  return new GuestProtocol(new LineChannel(socket), replyMs);
}
