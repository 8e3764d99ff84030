// The HTTP API: the part of Nova's compute API that shelving needs, for real OpenStack clients.
// Actions claim the instance here, so a conflict is a 409 before anything starts; the workflow
// then finds the claim its own (same request id). This is the composition root: Fastify with its
// hooks and handlers, and each resource's routes from api/routes/, given the same dependencies.
import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { GlanceClient } from '../lib/glance.js';
import { logger } from '../lib/logger.js';
import { ApiFault, FAULT_CODE_OF_FAILURE } from './faults.js';
import { type ApiDependencies, beginner, type RouteDependencies } from './requests.js';
import { registerFlavorRoutes } from './routes/flavors.js';
import { registerImageRoutes } from './routes/images.js';
import { registerInstanceActionRoutes } from './routes/instance-actions.js';
import { registerMetricsRoutes } from './routes/metrics.js';
import { registerServiceRoutes } from './routes/os-services.js';
import { registerServerActionRoutes } from './routes/server-actions.js';
import { registerServerRoutes } from './routes/servers.js';
import { registerVersionRoutes } from './routes/versions.js';

export type { ApiDependencies } from './requests.js';

/** Nova refuses bodies over its max_request_body_size; so does this API, well below. */
const BODY_LIMIT = 64 * 1024;

/** Every route module: a function of the app and the shared dependencies, called once. */
const ROUTES: ((app: FastifyInstance, deps: RouteDependencies) => void)[] = [
  registerVersionRoutes,
  registerServiceRoutes,
  registerMetricsRoutes,
  registerServerRoutes,
  registerInstanceActionRoutes,
  registerFlavorRoutes,
  registerImageRoutes,
  registerServerActionRoutes,
];

function faultOf(failure: ApplicationFailure): ApiFault | null {
  const code = failure.type ? FAULT_CODE_OF_FAILURE[failure.type] : undefined;
  return code ? new ApiFault(code, failure.message) : null;
}

export function buildApi({ config, pool, client }: ApiDependencies): FastifyInstance {
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    logger: false,
    genReqId: () => `req-${randomUUID()}`,
    // An id of any length is looked up and not found (404), as in Nova, rather than refused by the router.
    routerOptions: { maxParamLength: 8192 },
    // Errors of Fastify's own, before any route runs (a malformed URL, say), in Nova's shape too.
    frameworkErrors: (error, _request, reply) => {
      (reply as FastifyReply).code(400).send(new ApiFault(400, `Malformed request: ${error.message}`).body());
    },
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-openstack-request-id', request.id).header('x-compute-request-id', request.id);
  });

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, request, reply) => {
    let fault: ApiFault;
    if (error instanceof ApiFault) fault = error;
    else if (error instanceof ApplicationFailure && faultOf(error)) fault = faultOf(error)!;
    else if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') fault = new ApiFault(413, 'Request is too large.');
    else if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      fault = new ApiFault(400, `Malformed request body: ${error.message}`);
    } else {
      logger.error({ err: error, requestId: request.id, url: request.url }, 'API request failed');
      fault = new ApiFault(500, 'Unexpected API Error. Please report this at the project and attach the request id.');
    }
    reply.code(fault.code).send(fault.body());
  });

  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(new ApiFault(404, `No such resource: ${request.method} ${request.url}`).body());
  });

  const deps: RouteDependencies = {
    config,
    pool,
    client,
    begin: beginner(config.auth),
    glance: new GlanceClient(config.glance),
  };
  for (const register of ROUTES) register(app, deps);
  return app;
}
