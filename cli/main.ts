// vm-shelve: shelve, offload and unshelve servers from a terminal, through the HTTP API alone: the
// actions meet the API's claims and policies, and their progress (the bytes the workflow's
// activities report moved) comes from the API too. The CLI needs no access to Temporal.
import { setTimeout as sleep } from 'node:timers/promises';
import { SingleBar } from 'cli-progress';
import { Command, Option } from 'commander';

interface GlobalOptions {
  api: string;
  token: string;
  json: boolean;
}

type Server = Record<string, unknown> & { id: string; status: string };

/** One action as GET /servers/{id}/os-instance-actions/{request_id} shows it (2.84). */
interface ActionDetail {
  message: string | null;
  events: { event: string; result: string | null; details?: string | null }[];
  /** vm-shelve's extension: null once the action has finished. */
  progress: { step: string | null; bytes_done: number | null; bytes_total: number | null; running: boolean } | null;
}

/** The API's address by default: where `npm run api` listens (API_HOST, API_PORT). */
const DEFAULT_API = `http://${process.env.API_HOST || '127.0.0.1'}:${process.env.API_PORT || '8774'}`;

/** A one-line reason and a non-zero exit: what scripts and people both can read. */
class CliError extends Error {}

/** Calls the API; returns the answer and the request id the API gave the request. */
async function call(options: GlobalOptions, method: string, path: string, body?: unknown, version?: string) {
  const response = await fetch(`${options.api}/v2.1${path}`, {
    method,
    headers: {
      'x-auth-token': options.token,
      ...(version ? { 'openstack-api-version': `compute ${version}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).catch((error: Error) => {
    throw new CliError(`cannot reach the API at ${options.api}: ${error.cause ?? error.message}`);
  });
  const text = await response.text();
  const json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if (!response.ok) {
    const fault = Object.values(json)[0] as { message?: string } | undefined;
    throw new CliError(`${response.status}: ${fault?.message ?? text}`);
  }
  return { json, requestId: response.headers.get('x-openstack-request-id') };
}

const request = async (options: GlobalOptions, method: string, path: string, body?: unknown, version?: string) =>
  (await call(options, method, path, body, version)).json;

const getServer = async (options: GlobalOptions, id: string) =>
  (await request(options, 'GET', `/servers/${id}`)).server as Server;

function stateLine(server: Server): string {
  return [
    server.status.padEnd(17),
    `vm_state=${server['OS-EXT-STS:vm_state']}`,
    `task_state=${server['OS-EXT-STS:task_state'] ?? 'None'}`,
    `power_state=${server['OS-EXT-STS:power_state']}`,
  ].join(' ');
}

/** Why a finished action failed, as its actions log tells it: the message of its first failed step. */
function failureReason(action: ActionDetail, id: string): string {
  const failed = action.events.find((event) => event.result === 'Error' && event.details);
  return failed?.details ?? `no reason recorded (see vm-shelve actions ${id})`;
}

const MiB = 1024 * 1024;

/**
 * Follows an action, by the request id the API gave it, to its end: each state change on a line
 * of its own, a progress bar (MiB and rate) while disk data moves. Returns the server as it ends;
 * throws the failure's reason.
 */
async function follow(options: GlobalOptions, id: string, action: string, requestId: string) {
  let bar: SingleBar | undefined;
  let barStarted = 0;
  let lastLine = '';
  let lastStep: string | undefined;
  let detail: ActionDetail;
  for (;;) {
    const server = await getServer(options, id);
    detail = (await request(options, 'GET', `/servers/${id}/os-instance-actions/${requestId}`, undefined, '2.84'))
      .instanceAction as ActionDetail;
    const progress = detail.progress;
    if (!progress?.running) break;
    if (!options.json) {
      const line = stateLine(server);
      if (line !== lastLine && !bar) console.log(line);
      lastLine = line;
      if (progress.bytes_total && progress.bytes_done !== null) {
        bar ??= new SingleBar({
          format: `  ${progress.step} [{bar}] {percentage}% {doneMiB}/{totalMiB} MiB {rate} MiB/s`,
          hideCursor: true,
          // Without a terminal (logs, scripts), a line every second instead of a redrawn bar.
          noTTYOutput: true,
          notTTYSchedule: 1000,
        });
        if (!bar.isActive) {
          bar.start(progress.bytes_total, 0, { doneMiB: '0.0', totalMiB: '0.0', rate: '0.0' });
          barStarted = Date.now();
        }
        const seconds = Math.max((Date.now() - barStarted) / 1000, 0.001);
        bar.update(progress.bytes_done, {
          doneMiB: (progress.bytes_done / MiB).toFixed(1),
          totalMiB: (progress.bytes_total / MiB).toFixed(1),
          rate: (progress.bytes_done / MiB / seconds).toFixed(1),
        });
      } else {
        if (bar?.isActive) {
          bar.stop();
          bar = undefined;
        }
        // A step without byte counts, such as waiting for a compute host's worker.
        if (progress.step && progress.step !== lastStep) console.log(`  ${progress.step}`);
      }
      lastStep = progress.bytes_total ? lastStep : (progress.step ?? undefined);
    }
    await sleep(300);
  }
  bar?.stop();
  if (detail.progress) throw new CliError(`${action} of ${id} failed: its workflow ended before the action finished`);
  if (detail.message === 'Error') throw new CliError(`${action} of ${id} failed: ${failureReason(detail, id)}`);
  const server = await getServer(options, id);
  if (!options.json) console.log(stateLine(server));
  return server;
}

function print(options: GlobalOptions, value: unknown, text: () => string): void {
  console.log(options.json ? JSON.stringify(value, null, 2) : text());
}

const program = new Command('vm-shelve')
  .description('Shelve, offload and unshelve servers through the vm-shelve API')
  .addOption(new Option('--api <url>', 'API endpoint').env('VM_SHELVE_API').default(DEFAULT_API))
  .addOption(new Option('--token <user:project>', 'token (noauth: user:project)').env('OS_TOKEN').makeOptionMandatory())
  .option('--json', 'machine-readable output', false)
  .showHelpAfterError();

const globals = () => program.opts<GlobalOptions>();

async function act(id: string, body: unknown, version?: string, wait = true) {
  const options = globals();
  const action = Object.keys(body as object)[0] as 'shelve' | 'shelveOffload' | 'unshelve';
  const { requestId } = await call(options, 'POST', `/servers/${id}/action`, body, version);
  if (!wait) return print(options, { id, action, accepted: true }, () => `${action} of ${id} accepted`);
  if (!requestId)
    throw new CliError(`the API at ${options.api} named no request id (x-openstack-request-id) for the ${action}`);
  const server = await follow(options, id, action, requestId);
  print(options, server, () => `${action} of ${id} done: ${server.status}`);
}

program
  .command('shelve <server>')
  .description('shelve a server (and offload it with --offload, admin only)')
  .option('--offload', 'offload it right after, as an admin would')
  .option('--no-wait', 'return once the API accepted the request')
  .action(async (id: string, options: { offload?: boolean; wait: boolean }) => {
    await act(id, { shelve: null }, undefined, options.wait || Boolean(options.offload));
    if (options.offload) await act(id, { shelveOffload: null }, undefined, options.wait);
  });

program
  .command('offload <server>')
  .description('offload a SHELVED server from its host (admin only)')
  .option('--no-wait', 'return once the API accepted the request')
  .action((id: string, options: { wait: boolean }) => act(id, { shelveOffload: null }, undefined, options.wait));

program
  .command('unshelve <server>')
  .description('unshelve a server, on a named host (2.91, admin only) or into an availability zone (2.77)')
  .option('--host <host>', 'the host to spawn on')
  .option('--az <zone>', 'the availability zone to spawn in and pin the server to')
  .option('--no-wait', 'return once the API accepted the request')
  .action((id: string, options: { host?: string; az?: string; wait: boolean }) => {
    const placement = {
      ...(options.host ? { host: options.host } : {}),
      ...(options.az ? { availability_zone: options.az } : {}),
    };
    const version = options.host ? '2.91' : options.az ? '2.77' : undefined;
    return act(id, { unshelve: Object.keys(placement).length ? placement : null }, version, options.wait);
  });

program
  .command('reset-state <server>')
  .description("reset a stuck server's state to active (or error with --error), admin only: Nova's os-resetState")
  .option('--error', 'reset it to error, not active')
  .action(async (id: string, options: { error?: boolean }) => {
    const state = options.error ? 'error' : 'active';
    await call(globals(), 'POST', `/servers/${id}/action`, { 'os-resetState': { state } });
    const server = await getServer(globals(), id);
    print(globals(), server, () => `state of ${id} reset: ${stateLine(server)}`);
  });

program
  .command('show <server>')
  .description("show a server's states")
  .action(async (id: string) => {
    const server = await getServer(globals(), id);
    print(globals(), server, () => `${server.id} ${server.name}\n${stateLine(server)}`);
  });

program
  .command('list')
  .description('list servers')
  .action(async () => {
    const servers = (await request(globals(), 'GET', '/servers/detail')).servers as Server[];
    print(globals(), servers, () =>
      servers.map((server) => `${server.id} ${String(server.name).padEnd(24)} ${stateLine(server)}`).join('\n'),
    );
  });

program
  .command('actions <server>')
  .description("list a server's actions and their steps")
  .action(async (id: string) => {
    const options = globals();
    const { instanceActions } = (await request(options, 'GET', `/servers/${id}/os-instance-actions`)) as {
      instanceActions: { request_id: string; action: string; start_time: string; message: string | null }[];
    };
    const detailed = await Promise.all(
      instanceActions.map(
        async (action) =>
          (await request(options, 'GET', `/servers/${id}/os-instance-actions/${action.request_id}`)).instanceAction as {
            action: string;
            start_time: string;
            message: string | null;
            events: { event: string; result: string | null }[];
          },
      ),
    );
    print(options, detailed, () =>
      detailed
        .map((action) =>
          [
            `${action.start_time} ${action.action}${action.message ? ` (${action.message})` : ''}`,
            ...action.events.map((event) => `    ${event.event}: ${event.result ?? 'running'}`),
          ].join('\n'),
        )
        .join('\n'),
    );
  });

program
  .command('watch <server>')
  .description("print a server's states as they change, until interrupted")
  .action(async (id: string) => {
    const options = globals();
    let last = '';
    for (;;) {
      const server = await getServer(options, id);
      const line = options.json ? JSON.stringify(server) : stateLine(server);
      if (line !== last) console.log(options.json ? line : `${new Date().toISOString()} ${line}`);
      last = line;
      await sleep(500);
    }
  });

await program.parseAsync().catch((error: unknown) => {
  console.error(`vm-shelve: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
