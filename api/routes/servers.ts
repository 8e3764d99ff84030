// Nova's servers: list (every project's for an admin who asks), show, create (a build workflow)
// and delete. An action on a server is api/routes/server-actions.ts.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createInstance, listInstances } from '../../lib/db/instances.js';
import { startAction } from '../../lib/actions.js';
import { findFlavor } from '../../lib/flavors.js';
import {
  checkImage,
  ImageFormatError,
  imageRefusal,
  INSPECTION_BYTES,
  inspectImage,
} from '../../lib/format-inspector.js';
import type { GlanceClient, GlanceImage } from '../../lib/glance.js';
import { type Flavor, imageSystemMetadata, isUuid } from '../../lib/nova.js';
import { workflowId } from '../../lib/temporal.js';
import { serverCreateRequest } from '../action-bodies.js';
import type { RequestContext } from '../context.js';
import { ApiFault } from '../faults.js';
import { baseUrl, claimAndStart, type RouteDependencies, visibleServer, visibleTo } from '../requests.js';
import { serverView } from '../views.js';

/**
 * Refuses at once an image whose first bytes are not what Glance's disk_format says, name
 * another file, or claim more than the flavor's disk: the compute host checks the whole image
 * again before anything opens it (activities/compute/image-download.ts).
 */
async function checkBootImage(
  glance: GlanceClient,
  context: RequestContext,
  image: GlanceImage,
  flavor: Flavor,
): Promise<void> {
  const head = await glance.readImageHead(context, image.id, INSPECTION_BYTES);
  try {
    checkImage(inspectImage(head, image.size ?? head.length), {
      diskFormat: image.disk_format,
      maxVirtualSize: flavor.rootGb > 0 ? flavor.rootGb * 1024 ** 3 : undefined,
    });
  } catch (error) {
    if (error instanceof ImageFormatError) throw new ApiFault(400, imageRefusal(image.id, image.disk_format, error));
    throw error;
  }
}

export function registerServerRoutes(app: FastifyInstance, deps: RouteDependencies): void {
  const { config, pool, client, begin, glance } = deps;

  app.get<{ Params: { id: string } }>('/v2.1/servers/:id', async (request, reply) => {
    const { context } = await begin(request, reply);
    return { server: serverView(await visibleServer(pool, context, request.params.id), context, baseUrl(request)) };
  });

  async function listServers(request: FastifyRequest<{ Querystring: { all_tenants?: string } }>, reply: FastifyReply) {
    const { context } = await begin(request, reply);
    const allProjects = context.isAdmin && request.query.all_tenants !== undefined;
    return { context, instances: await listInstances(pool, allProjects ? null : context.projectId) };
  }
  app.get<{ Querystring: { all_tenants?: string } }>('/v2.1/servers/detail', async (request, reply) => {
    const { context, instances } = await listServers(request, reply);
    return { servers: instances.map((instance) => serverView(instance, context, baseUrl(request))) };
  });
  app.get<{ Querystring: { all_tenants?: string } }>('/v2.1/servers', async (request, reply) => ({
    servers: (await listServers(request, reply)).instances.map((instance) => ({
      id: instance.uuid,
      name: instance.displayName,
      links: [{ rel: 'self', href: `${baseUrl(request)}/v2.1/servers/${instance.uuid}` }],
    })),
  }));

  app.post<{ Body: unknown }>('/v2.1/servers', async (request, reply) => {
    const { context } = await begin(request, reply);
    const server = serverCreateRequest(request.body);
    const flavor = findFlavor(server.flavorRef);
    if (!flavor) throw new ApiFault(400, `Flavor ${server.flavorRef} could not be found.`);
    const image = isUuid(server.imageRef) ? await glance.getImage(context, server.imageRef) : null;
    if (!image || !visibleTo(context, image) || image.status !== 'active') {
      throw new ApiFault(400, `Image ${server.imageRef} could not be found.`);
    }
    await checkBootImage(glance, context, image, flavor);
    const instanceUuid = randomUUID();
    const build = {
      instanceUuid,
      displayName: server.name,
      projectId: context.projectId,
      userId: context.userId,
      imageRef: image.id,
      flavor,
      requestId: request.id,
      ...(server.availability_zone ? { availabilityZone: server.availability_zone } : {}),
    };
    // Recorded before the 202, so that the client's next GET finds the server; the workflow's
    // own create finds this row (same request) and goes on.
    await createInstance(pool, {
      uuid: instanceUuid,
      displayName: server.name,
      projectId: context.projectId,
      userId: context.userId,
      imageRef: image.id,
      flavor,
      availabilityZone: server.availability_zone ?? null,
      requestId: request.id,
      systemMetadata: imageSystemMetadata(image),
      blockDeviceMappings: [],
      ports: [],
      workflowId: workflowId('build', instanceUuid),
    });
    await startAction(client, config, 'build', build);
    reply.code(202);
    return {
      server: {
        id: instanceUuid,
        links: [{ rel: 'self', href: `${baseUrl(request)}/v2.1/servers/${instanceUuid}` }],
        'OS-DCF:diskConfig': 'MANUAL',
        security_groups: [{ name: 'default' }],
      },
    };
  });

  // Nova's delete: the owner's project or an admin (os_compute_api:servers:delete); the server,
  // its domain and files and its shelve snapshot go, its volumes stay.
  app.delete<{ Params: { id: string } }>('/v2.1/servers/:id', async (request, reply) => {
    const { context } = await begin(request, reply);
    const instance = await visibleServer(pool, context, request.params.id);
    await claimAndStart(deps, request, context, instance, 'delete', {});
    reply.code(204).send();
  });
}
