// The version documents that clients read first: the list at /, and v2.1 itself with the
// microversions it serves.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { MAX_VERSION, MIN_VERSION } from '../microversions.js';
import { baseUrl } from '../requests.js';

const versionView = (request: FastifyRequest) => ({
  id: 'v2.1',
  status: 'CURRENT',
  version: MAX_VERSION,
  min_version: MIN_VERSION,
  updated: '2013-07-23T11:33:21Z',
  links: [{ rel: 'self', href: `${baseUrl(request)}/v2.1/` }],
  'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.compute+json;version=2.1' }],
});

export function registerVersionRoutes(app: FastifyInstance): void {
  app.get('/', async (request) => ({ versions: [versionView(request)] }));
  app.get('/v2.1', async (request) => ({ version: versionView(request) }));
  app.get('/v2.1/', async (request) => ({ version: versionView(request) }));
}
