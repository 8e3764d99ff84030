// The request bodies Nova accepts for the calls served here (docs/nova-behaviour.md §6 for the shelve actions),
// checked with JSON schemas.
import { Ajv, type ErrorObject } from 'ajv';
import { ApiFault } from './faults.js';
import { atLeast, type Microversion } from './microversions.js';

const ajv = new Ajv({ allErrors: false });

const zoneName = { type: 'string', minLength: 1, maxLength: 255, pattern: '^[^:/]+$' };

// 2.77–2.90: null, or an object with only availability_zone, a name.
const unshelve277 = ajv.compile({
  oneOf: [
    { type: 'null' },
    {
      type: 'object',
      properties: { availability_zone: zoneName },
      required: ['availability_zone'],
      additionalProperties: false,
    },
  ],
});

// 2.91 and later: null, or an object with availability_zone (a name, or null to unpin) and host.
const unshelve291 = ajv.compile({
  oneOf: [
    { type: 'null' },
    {
      type: 'object',
      properties: {
        availability_zone: { oneOf: [zoneName, { type: 'null' }] },
        host: { type: 'string', minLength: 1, maxLength: 255 },
      },
      additionalProperties: false,
    },
  ],
});

function describe(errors: ErrorObject[] | null | undefined, root = 'unshelve'): string {
  // The deepest error names the field; oneOf's own "must match exactly one schema" does not.
  const error = [...(errors ?? [])].reverse().find((e) => e.keyword !== 'oneOf') ?? errors?.[0];
  if (!error) return 'invalid';
  const field = error.instancePath ? `${root}${error.instancePath.replaceAll('/', '.')}` : root;
  const extra =
    error.keyword === 'additionalProperties' ? ` ('${error.params.additionalProperty}' was unexpected)` : '';
  return `Invalid input for field/attribute ${field}: ${error.message}${extra}.`;
}

export interface UnshelveRequest {
  host?: string;
  /** Present when the request names a zone; null unpins. */
  availabilityZone?: string | null;
}

/** What an unshelve body asks for at this microversion; before 2.77 any body is a plain unshelve. */
export function unshelveRequest(body: unknown, version: Microversion): UnshelveRequest {
  if (!atLeast(version, '2.77')) return {};
  const validate = atLeast(version, '2.91') ? unshelve291 : unshelve277;
  if (!validate(body)) throw new ApiFault(400, describe(validate.errors));
  if (body === null) return {};
  const { host, availability_zone: zone } = body as { host?: string; availability_zone?: string | null };
  return { ...(host !== undefined ? { host } : {}), ...(zone !== undefined ? { availabilityZone: zone } : {}) };
}

// POST /servers: what this API can build (image-backed, one flavor, maybe a zone). Fields real
// clients send with their defaults are accepted; anything else is refused by name.
const serverCreate = ajv.compile({
  type: 'object',
  properties: {
    server: {
      type: 'object',
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 255 },
        imageRef: { type: 'string', minLength: 1 },
        flavorRef: { type: 'string', minLength: 1 },
        availability_zone: zoneName,
        min_count: { const: 1 },
        max_count: { const: 1 },
        networks: { enum: ['auto', 'none'] },
      },
      required: ['name', 'imageRef', 'flavorRef'],
      additionalProperties: false,
    },
  },
  required: ['server'],
  additionalProperties: false,
});

export interface ServerCreateRequest {
  name: string;
  imageRef: string;
  flavorRef: string;
  availability_zone?: string;
}

export function serverCreateRequest(body: unknown): ServerCreateRequest {
  if (!serverCreate(body)) throw new ApiFault(400, describe(serverCreate.errors, 'body'));
  return (body as { server: ServerCreateRequest }).server;
}

// os-resetState: {"state": "active"} or {"state": "error"}, nothing else.
const resetState = ajv.compile({
  type: 'object',
  properties: { state: { type: 'string', enum: ['active', 'error'] } },
  required: ['state'],
  additionalProperties: false,
});

/** The vm_state an os-resetState body asks for. */
export function resetStateRequest(body: unknown): 'active' | 'error' {
  if (!resetState(body)) throw new ApiFault(400, describe(resetState.errors, 'os-resetState'));
  return (body as { state: 'active' | 'error' }).state;
}
