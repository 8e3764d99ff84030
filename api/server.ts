// The HTTP API: the part of Nova's compute API that shelving needs, for real OpenStack clients.
// Actions claim the instance here, so a conflict is a 409 before anything starts; the workflow
// then finds the claim its own (same request id).
import { randomUUID } from 'node:crypto';
import { type Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { listInstanceActions } from '../activities/action-log.js';
import {
  claimHolder,
  createDatabaseActivities,
  getInstance,
  listInstances,
  resetInstanceState,
} from '../activities/database.js';
import { type Action, startAction } from '../lib/actions.js';
import type { Config } from '../lib/config.js';
import { logger } from '../lib/logger.js';
import { registry } from '../lib/metrics.js';
import { FLAVORS, findFlavor } from '../lib/flavors.js';
import { checkImage, ImageFormatError, imageRefusal, INSPECTION_BYTES, inspectImage } from '../lib/format-inspector.js';
import { type GlanceImage, GlanceClient } from '../lib/glance.js';
import { type Flavor, imageSystemMetadata, type Instance, type InstanceAction, isUuid, VmState } from '../lib/nova.js';
import { targetZone } from '../lib/scheduler.js';
import { workflowId } from '../lib/temporal.js';
import { resetStateRequest, serverCreateRequest, unshelveRequest } from './action-bodies.js';
import { authenticator, type RequestContext } from './context.js';
import { ApiFault, FAULT_CODE_OF_FAILURE } from './faults.js';
import {
  atLeast,
  format,
  MAX_VERSION,
  MIN_VERSION,
  type Microversion,
  requestedMicroversion,
} from './microversions.js';
import { registerServiceRoutes } from './os-services.js';
import { actionProgress } from './progress.js';
import { actionView, serverView } from './views.js';

export interface ApiDependencies {
  config: Config;
  pool: Pool;
  client: Client;
}

/** Nova refuses bodies over its max_request_body_size; so does this API, well below. */
const BODY_LIMIT = 64 * 1024;

/** The actions of POST /servers/{id}/action this API serves. */
const SERVER_ACTIONS = ['shelve', 'shelveOffload', 'unshelve', 'os-resetState'] as const;

function forbidden(rule: string): ApiFault {
  return new ApiFault(403, `Policy doesn't allow os_compute_api:${rule} to be performed.`);
}

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
  const database = createDatabaseActivities(pool);
  const glance = new GlanceClient(config.glance);
  const authenticate = authenticator(config.auth);

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

  const baseUrl = (request: FastifyRequest) => `${request.protocol}://${request.host}`;

  /** Authenticates, reads the microversion, and answers with it as Nova does. */
  async function begin(
    request: FastifyRequest,
    reply: FastifyReply,
  ): Promise<{ context: RequestContext; version: Microversion }> {
    const version = requestedMicroversion(request.headers);
    reply
      .header('openstack-api-version', `compute ${format(version)}`)
      .header('x-openstack-nova-api-version', format(version))
      .header('vary', 'OpenStack-API-Version, X-OpenStack-Nova-API-Version');
    const token = request.headers['x-auth-token'];
    return { context: await authenticate(typeof token === 'string' ? token : undefined), version };
  }

  /** The server, if it exists and the caller may see it: another project's server is a 404. */
  async function visibleServer(context: RequestContext, id: string): Promise<Instance> {
    const notFound = new ApiFault(404, `Instance ${id} could not be found.`);
    const instance = await getInstance(pool, id).catch((error: unknown) => {
      throw error instanceof ApplicationFailure && error.type === 'InstanceNotFound' ? notFound : error;
    });
    if (!context.isAdmin && instance.projectId !== context.projectId) throw notFound;
    return instance;
  }

  const versionView = (request: FastifyRequest) => ({
    id: 'v2.1',
    status: 'CURRENT',
    version: MAX_VERSION,
    min_version: MIN_VERSION,
    updated: '2013-07-23T11:33:21Z',
    links: [{ rel: 'self', href: `${baseUrl(request)}/v2.1/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.compute+json;version=2.1' }],
  });
  app.get('/', async (request) => ({ versions: [versionView(request)] }));
  registerServiceRoutes(app, { begin, pool });
  app.get('/v2.1', async (request) => ({ version: versionView(request) }));
  app.get('/v2.1/', async (request) => ({ version: versionView(request) }));

  // Admins only: the metrics name hosts and volumes of work.
  app.get('/metrics', async (request, reply) => {
    const { context } = await begin(request, reply);
    if (!context.isAdmin) throw forbidden('metrics');
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });

  app.get<{ Params: { id: string } }>('/v2.1/servers/:id', async (request, reply) => {
    const { context } = await begin(request, reply);
    return { server: serverView(await visibleServer(context, request.params.id), context, baseUrl(request)) };
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

  app.get<{ Params: { id: string } }>('/v2.1/servers/:id/os-instance-actions', async (request, reply) => {
    const { context } = await begin(request, reply);
    const instance = await visibleServer(context, request.params.id);
    const actions = await listInstanceActions(pool, instance.uuid);
    return { instanceActions: actions.map((action) => actionView(action, context, false)) };
  });

  app.get<{ Params: { id: string; requestId: string } }>(
    '/v2.1/servers/:id/os-instance-actions/:requestId',
    async (request, reply) => {
      const { context, version } = await begin(request, reply);
      const instance = await visibleServer(context, request.params.id);
      const action = (await listInstanceActions(pool, instance.uuid)).find(
        (candidate) => candidate.requestId === request.params.requestId,
      );
      if (!action) throw new ApiFault(404, `Action for request_id ${request.params.requestId} not found`);
      // vm-shelve's extension: the running action's progress, from its workflow in Temporal.
      const progress = await actionProgress(client, pool, action, context.isAdmin);
      return { instanceAction: actionView(action, context, true, { details: atLeast(version, '2.84'), progress }) };
    },
  );

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

  /**
   * Refuses at once an image whose first bytes are not what Glance's disk_format says, name
   * another file, or claim more than the flavor's disk: the compute host checks the whole image
   * again before anything opens it (activities/compute.ts).
   */
  async function checkBootImage(context: RequestContext, image: GlanceImage, flavor: Flavor): Promise<void> {
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

  // The images a caller may boot from, as Glance shows them: clients that reach every service
  // through this one endpoint look images up here.
  const visibleTo = (context: RequestContext, image: GlanceImage) =>
    context.isAdmin || image.owner === context.projectId || ['public', 'community'].includes(image.visibility);
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

  app.post<{ Body: unknown }>('/v2.1/servers', async (request, reply) => {
    const { context } = await begin(request, reply);
    const server = serverCreateRequest(request.body);
    const flavor = findFlavor(server.flavorRef);
    if (!flavor) throw new ApiFault(400, `Flavor ${server.flavorRef} could not be found.`);
    const image = isUuid(server.imageRef) ? await glance.getImage(context, server.imageRef) : null;
    if (!image || !visibleTo(context, image) || image.status !== 'active') {
      throw new ApiFault(400, `Image ${server.imageRef} could not be found.`);
    }
    await checkBootImage(context, image, flavor);
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
    await database.createInstance({
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

  app.post<{ Params: { id: string }; Body: unknown }>('/v2.1/servers/:id/action', async (request, reply) => {
    const { context, version } = await begin(request, reply);
    const body = request.body;
    if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).length !== 1) {
      throw new ApiFault(400, 'Malformed request body: expected an object with exactly one action.');
    }
    const [name] = Object.keys(body) as [string];
    if (!(SERVER_ACTIONS as readonly string[]).includes(name))
      throw new ApiFault(400, `There is no such action: ${name}`);
    const action = name as (typeof SERVER_ACTIONS)[number];
    const instance = await visibleServer(context, request.params.id);
    if (action === 'os-resetState') {
      if (!context.isAdmin) throw forbidden('os-admin-actions:reset_state');
      await resetState(instance, resetStateRequest((body as Record<string, unknown>)[action]));
      return reply.code(202).send();
    }

    // Policies (os_compute_api:os-shelve:*): the owner's project or an admin; offload and a
    // named host are admin-only.
    if (action === 'shelveOffload' && !context.isAdmin) throw forbidden('os-shelve:shelve_offload');
    const unshelve = action === 'unshelve' ? unshelveRequest((body as Record<string, unknown>).unshelve, version) : {};
    if (unshelve.host !== undefined && !context.isAdmin) throw forbidden('os-shelve:unshelve_to_host');
    if (
      (unshelve.host !== undefined || 'availabilityZone' in unshelve) &&
      instance.vmState !== VmState.SHELVED_OFFLOADED
    ) {
      throw new ApiFault(
        409,
        `The unshelve action on a server with a host or an availability zone is only allowed for status SHELVED_OFFLOADED; server ${instance.uuid} is ${instance.vmState}.`,
      );
    }
    if (unshelve.host !== undefined || unshelve.availabilityZone) {
      // The zone and host errors Nova's API gives at once (400, 409), from the scheduler itself.
      await database
        .selectDestination({
          instanceUuid: instance.uuid,
          flavor: instance.flavor,
          availabilityZone: targetZone(unshelve, instance),
          requestedHost: unshelve.host,
        })
        .catch((error: unknown) => {
          if (error instanceof ApplicationFailure && error.type === 'NoValidHost') return;
          throw error;
        });
    }

    await claimAndStart(request, context, instance, action, unshelve);
    reply.code(202).send();
  });

  // Nova's delete: the owner's project or an admin (os_compute_api:servers:delete); the server,
  // its domain and files and its shelve snapshot go, its volumes stay.
  app.delete<{ Params: { id: string } }>('/v2.1/servers/:id', async (request, reply) => {
    const { context } = await begin(request, reply);
    const instance = await visibleServer(context, request.params.id);
    await claimAndStart(request, context, instance, 'delete', {});
    reply.code(204).send();
  });

  /**
   * Nova's os-resetState, for an instance that nothing else settles (its workflow terminated, say):
   * refused while the workflow that holds the instance still runs, which would go on acting on it.
   */
  async function resetState(instance: Instance, state: 'active' | 'error'): Promise<void> {
    const holder = await claimHolder(pool, instance.uuid);
    if (holder && (await workflowRunning(holder))) {
      throw new ApiFault(
        409,
        `Instance ${instance.uuid} is held by workflow ${holder}, which still runs: cancel or terminate it first.`,
      );
    }
    const vmState = state === 'active' ? VmState.ACTIVE : VmState.ERROR;
    if (!(await resetInstanceState(pool, instance.uuid, vmState, holder))) {
      throw new ApiFault(409, `Another action took instance ${instance.uuid} meanwhile; its state was not reset.`);
    }
  }

  async function workflowRunning(workflowId: string): Promise<boolean> {
    try {
      return (await client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return false;
      throw error;
    }
  }

  /**
   * Claims the instance for the action in the request's name and for the workflow about to run
   * it, so that a losing race is a 409 here, then starts that workflow, which finds the claim its
   * own (same request, same workflow id).
   */
  async function claimAndStart<A extends Action & InstanceAction>(
    request: FastifyRequest,
    context: RequestContext,
    instance: Instance,
    action: A,
    extra: object,
  ): Promise<void> {
    const requestId = request.id;
    const who = { requestId, userId: context.userId, projectId: context.projectId };
    await database.claimInstance({
      instanceUuid: instance.uuid,
      action,
      ...who,
      workflowId: workflowId(action, instance.uuid),
    });
    try {
      await startAction(client, config, action, { instanceUuid: instance.uuid, ...who, ...extra });
    } catch (error) {
      await database.releaseInstance({ instanceUuid: instance.uuid, requestId });
      if (error instanceof WorkflowExecutionAlreadyStartedError) {
        throw new ApiFault(409, `Another ${action} of instance ${instance.uuid} is still running.`);
      }
      throw error;
    }
  }

  return app;
}
