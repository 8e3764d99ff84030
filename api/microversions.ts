// Compute API microversions: the request's from OpenStack-API-Version (or the legacy
// X-OpenStack-Nova-API-Version), within what this API serves.
import { ApiFault } from './faults.js';

export const MIN_VERSION = '2.1';
export const MAX_VERSION = '2.93';

export interface Microversion {
  major: number;
  minor: number;
}

function parse(text: string): Microversion | null {
  const match = /^(\d+)\.(\d+)$/.exec(text.trim());
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : null;
}

export function atLeast(version: Microversion, text: string): boolean {
  const other = parse(text)!;
  return version.major > other.major || (version.major === other.major && version.minor >= other.minor);
}

export function format(version: Microversion): string {
  return `${version.major}.${version.minor}`;
}

/** The microversion a request asks for; the minimum when it names none. */
export function requestedMicroversion(headers: Record<string, string | string[] | undefined>): Microversion {
  const standard = headers['openstack-api-version'];
  const legacy = headers['x-openstack-nova-api-version'];
  let text: string | undefined;
  if (typeof standard === 'string') {
    const match = /^\s*compute\s+(\S+)\s*$/i.exec(standard);
    if (!match) throw new ApiFault(400, `Invalid OpenStack-API-Version header '${standard}': expected 'compute 2.x'.`);
    text = match[1];
  } else if (typeof legacy === 'string') {
    text = legacy;
  }
  if (text === undefined) return parse(MIN_VERSION)!;
  if (text.toLowerCase() === 'latest') return parse(MAX_VERSION)!;
  const version = parse(text);
  if (!version) throw new ApiFault(400, `Invalid API version request: '${text}' is not of the form 2.x.`);
  if (!atLeast(version, MIN_VERSION) || !atLeast(parse(MAX_VERSION)!, format(version))) {
    throw new ApiFault(
      406,
      `Version ${format(version)} is not supported by the API. Minimum is ${MIN_VERSION} and maximum is ${MAX_VERSION}.`,
    );
  }
  return version;
}
