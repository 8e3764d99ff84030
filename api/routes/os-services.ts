// Nova's os-services for the compute hosts (admin-only): list them with their state, disable one
// (with a reason) so the scheduler sends it nothing new, enable it, or force it down so that it
// counts as down at once. Microversion 2.53 and later name a service by its uuid; before, by host.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  type ComputeService,
  type ComputeServiceChanges,
  listComputeServices,
  updateComputeService,
} from '../../lib/db/compute-services.js';
import { ApiFault } from '../faults.js';
import { atLeast, type Microversion } from '../microversions.js';
import type { RouteDependencies } from '../requests.js';

/** The only service binary this project runs, under Nova's name. */
const BINARY = 'nova-compute';
/** Nova's limit on disabled_reason. */
const MAX_REASON_LENGTH = 255;

function serviceView(service: ComputeService, version: Microversion) {
  return {
    id: service.serviceId,
    binary: BINARY,
    host: service.host,
    zone: service.availabilityZone,
    status: service.disabled ? 'disabled' : 'enabled',
    state: service.up ? 'up' : 'down',
    updated_at: service.updatedAt,
    disabled_reason: service.disabledReason,
    ...(atLeast(version, '2.11') ? { forced_down: service.forcedDown } : {}),
  };
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiFault(400, 'Malformed request body: expected a JSON object.');
  }
  return body as Record<string, unknown>;
}

function onlyKeys(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw new ApiFault(
      400,
      `Invalid input for field/attribute: additional properties are not allowed (${unknown.join(', ')}).`,
    );
  }
}

function reasonOf(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim().length === 0 || value.length > MAX_REASON_LENGTH) {
    throw new ApiFault(
      400,
      `Invalid input for field/attribute disabled_reason: a string of 1 to ${MAX_REASON_LENGTH} characters.`,
    );
  }
  return value;
}

function forcedDownOf(value: unknown): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  throw new ApiFault(400, 'Invalid input for field/attribute forced_down: it must be a boolean.');
}

/** A 2.53+ body: status (with an optional disabled_reason when disabling) and/or forced_down. */
function changesOf(raw: unknown): ComputeServiceChanges {
  const body = bodyObject(raw);
  onlyKeys(body, ['status', 'disabled_reason', 'forced_down']);
  const { status } = body;
  if (status !== undefined && status !== 'enabled' && status !== 'disabled') {
    throw new ApiFault(400, "Invalid input for field/attribute status: it must be 'enabled' or 'disabled'.");
  }
  const disabledReason = reasonOf(body.disabled_reason);
  if (disabledReason !== undefined && status !== 'disabled') {
    throw new ApiFault(400, 'Specifying a disabled reason is not supported unless disabling the service.');
  }
  const forcedDown = forcedDownOf(body.forced_down);
  if (status === undefined && forcedDown === undefined) {
    throw new ApiFault(400, "No updates were requested. Fields 'status' or 'forced_down' should be specified.");
  }
  return { disabled: status === undefined ? undefined : status === 'disabled', disabledReason, forcedDown };
}

/** A pre-2.53 action (PUT /os-services/<action>) with its {host, binary, …} body. */
function legacyChangesOf(
  action: string,
  raw: unknown,
  version: Microversion,
): { host: string; changes: ComputeServiceChanges } {
  const body = bodyObject(raw);
  const allowed: Record<string, string[]> = {
    enable: ['host', 'binary'],
    disable: ['host', 'binary'],
    'disable-log-reason': ['host', 'binary', 'disabled_reason'],
    ...(atLeast(version, '2.11') ? { 'force-down': ['host', 'binary', 'forced_down'] } : {}),
  };
  const keys = allowed[action];
  if (!keys) throw new ApiFault(404, `Unknown action ${action}`);
  onlyKeys(body, keys);
  if (typeof body.host !== 'string' || body.binary !== BINARY) {
    throw new ApiFault(400, `Invalid input: 'host' (a string) and 'binary' ('${BINARY}') are required.`);
  }
  const changes: ComputeServiceChanges =
    action === 'force-down'
      ? { forcedDown: forcedDownOf(body.forced_down) ?? true }
      : {
          disabled: action !== 'enable',
          disabledReason: action === 'disable-log-reason' ? reasonOf(body.disabled_reason) : undefined,
        };
  return { host: body.host, changes };
}

export function registerServiceRoutes(app: FastifyInstance, { begin, pool }: RouteDependencies): void {
  async function admin(request: FastifyRequest, reply: FastifyReply, rule: string): Promise<Microversion> {
    const { context, version } = await begin(request, reply);
    if (!context.isAdmin)
      throw new ApiFault(403, `Policy doesn't allow os_compute_api:os-services:${rule} to be performed.`);
    return version;
  }

  app.get<{ Querystring: { host?: string; binary?: string } }>('/v2.1/os-services', async (request, reply) => {
    const version = await admin(request, reply, 'list');
    const { host, binary } = request.query;
    const services = binary !== undefined && binary !== BINARY ? [] : await listComputeServices(pool, host);
    return { services: services.map((service) => serviceView(service, version)) };
  });

  app.put<{ Params: { id: string }; Body: unknown }>('/v2.1/os-services/:id', async (request, reply) => {
    const version = await admin(request, reply, 'update');
    const { id } = request.params;
    if (atLeast(version, '2.53')) {
      const updated = await updateComputeService(pool, id, changesOf(request.body));
      if (!updated) throw new ApiFault(404, `Service ${id} could not be found.`);
      return { service: serviceView(updated, version) };
    }
    const { host, changes } = legacyChangesOf(id, request.body, version);
    const [service] = await listComputeServices(pool, host);
    if (!service) throw new ApiFault(404, `Host '${host}' is not mapped to any cell`);
    const updated = (await updateComputeService(pool, service.serviceId, changes))!;
    return {
      service: {
        host: updated.host,
        binary: BINARY,
        ...(id === 'force-down'
          ? { forced_down: updated.forcedDown }
          : { status: updated.disabled ? 'disabled' : 'enabled' }),
        ...(id === 'disable-log-reason' ? { disabled_reason: updated.disabledReason } : {}),
      },
    };
  });
}
