// Glance's images as the caller may see them (its project's, public and community ones), for
// clients that reach every service through this one endpoint.
import type { FastifyInstance } from 'fastify';
import { isUuid } from '../../lib/nova.js';
import { ApiFault } from '../faults.js';
import { type RouteDependencies, visibleTo } from '../requests.js';

export function registerImageRoutes(app: FastifyInstance, { begin, glance }: RouteDependencies): void {
  app.get<{ Params: { id: string } }>('/v2.1/images/:id', async (request, reply) => {
    const { context } = await begin(request, reply);
    const image = isUuid(request.params.id) ? await glance.getImage(context, request.params.id) : null;
    if (!image || !visibleTo(context, image)) throw new ApiFault(404, `Image ${request.params.id} could not be found.`);
    return image;
  });
  app.get<{ Querystring: { name?: string } }>('/v2.1/images', async (request, reply) => {
    const { context } = await begin(request, reply);
    const images = await glance.listImages(context, { name: request.query.name });
    return { images: images.filter((image) => visibleTo(context, image)) };
  });
}
