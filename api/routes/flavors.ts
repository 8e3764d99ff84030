// Nova's flavors: the fixed list of lib/flavors.ts, for any authenticated caller.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { FLAVORS } from '../../lib/flavors.js';
import type { Flavor } from '../../lib/nova.js';
import { ApiFault } from '../faults.js';
import { baseUrl, type RouteDependencies } from '../requests.js';

const flavorView = (flavor: Flavor, request: FastifyRequest) => ({
  id: flavor.flavorid,
  name: flavor.name,
  vcpus: flavor.vcpus,
  ram: flavor.memoryMb,
  disk: flavor.rootGb,
  'OS-FLV-EXT-DATA:ephemeral': flavor.ephemeralGb,
  swap: flavor.swap || '',
  rxtx_factor: 1.0,
  'os-flavor-access:is_public': true,
  links: [{ rel: 'self', href: `${baseUrl(request)}/v2.1/flavors/${flavor.flavorid}` }],
});

export function registerFlavorRoutes(app: FastifyInstance, { begin }: RouteDependencies): void {
  app.get('/v2.1/flavors', async (request, reply) => {
    await begin(request, reply);
    return { flavors: FLAVORS.map((flavor) => ({ id: flavor.flavorid, name: flavor.name })) };
  });
  app.get('/v2.1/flavors/detail', async (request, reply) => {
    await begin(request, reply);
    return { flavors: FLAVORS.map((flavor) => flavorView(flavor, request)) };
  });
  app.get<{ Params: { id: string } }>('/v2.1/flavors/:id', async (request, reply) => {
    await begin(request, reply);
    const flavor = FLAVORS.find((candidate) => candidate.flavorid === request.params.id);
    if (!flavor) throw new ApiFault(404, `Flavor ${request.params.id} could not be found.`);
    return { flavor: flavorView(flavor, request) };
  });
}
