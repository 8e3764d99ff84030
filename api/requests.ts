// What more than one route module needs: the dependencies buildApi hands every route module, the
// start of every request (authentication and microversion), the servers a caller may see, and
// the claim that starts an action.
import { type Client, WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { getInstance } from '../lib/db/instances.js';
import { claimInstance, releaseInstance } from '../lib/db/task-states.js';
import { type Action, startAction } from '../lib/actions.js';
import type { Config } from '../lib/config.js';
import type { GlanceClient, GlanceImage } from '../lib/glance.js';
import type { Instance, InstanceAction } from '../lib/nova.js';
import { workflowId } from '../lib/temporal.js';
import { authenticator, type RequestContext } from './context.js';
import { ApiFault } from './faults.js';
import { format, type Microversion, requestedMicroversion } from './microversions.js';

export interface ApiDependencies {
  config: Config;
  pool: Pool;
  client: Client;
}

export type Begin = (
  request: FastifyRequest,
  reply: FastifyReply,
) => Promise<{ context: RequestContext; version: Microversion }>;

/** What each route module of api/routes/ is given, made once by buildApi. */
export interface RouteDependencies extends ApiDependencies {
  begin: Begin;
  glance: GlanceClient;
}

/** Authenticates, reads the microversion, and answers with it as Nova does. */
export function beginner(auth: Config['auth']): Begin {
  const authenticate = authenticator(auth);
  return async (request, reply) => {
    const version = requestedMicroversion(request.headers);
    reply
      .header('openstack-api-version', `compute ${format(version)}`)
      .header('x-openstack-nova-api-version', format(version))
      .header('vary', 'OpenStack-API-Version, X-OpenStack-Nova-API-Version');
    const token = request.headers['x-auth-token'];
    return { context: await authenticate(typeof token === 'string' ? token : undefined), version };
  };
}

export const baseUrl = (request: FastifyRequest) => `${request.protocol}://${request.host}`;

export function forbidden(rule: string): ApiFault {
  return new ApiFault(403, `Policy doesn't allow os_compute_api:${rule} to be performed.`);
}

/** The server, if it exists and the caller may see it: another project's server is a 404. */
export async function visibleServer(pool: Pool, context: RequestContext, id: string): Promise<Instance> {
  const notFound = new ApiFault(404, `Instance ${id} could not be found.`);
  const instance = await getInstance(pool, id).catch((error: unknown) => {
    throw error instanceof ApplicationFailure && error.type === 'InstanceNotFound' ? notFound : error;
  });
  if (!context.isAdmin && instance.projectId !== context.projectId) throw notFound;
  return instance;
}

// The images a caller may boot from, as Glance shows them: clients that reach every service
// through this one endpoint look images up here.
export const visibleTo = (context: RequestContext, image: GlanceImage) =>
  context.isAdmin || image.owner === context.projectId || ['public', 'community'].includes(image.visibility);

/**
 * Claims the instance for the action in the request's name and for the workflow about to run
 * it, so that a losing race is a 409 here, then starts that workflow, which finds the claim its
 * own (same request, same workflow id).
 */
export async function claimAndStart<A extends Action & InstanceAction>(
  { config, client, pool }: Pick<RouteDependencies, 'config' | 'client' | 'pool'>,
  request: FastifyRequest,
  context: RequestContext,
  instance: Instance,
  action: A,
  extra: object,
): Promise<void> {
  const requestId = request.id;
  const who = { requestId, userId: context.userId, projectId: context.projectId };
  await claimInstance(pool, {
    instanceUuid: instance.uuid,
    action,
    ...who,
    workflowId: workflowId(action, instance.uuid),
  });
  try {
    await startAction(client, config, action, { instanceUuid: instance.uuid, ...who, ...extra });
  } catch (error) {
    await releaseInstance(pool, { instanceUuid: instance.uuid, requestId });
    if (error instanceof WorkflowExecutionAlreadyStartedError) {
      throw new ApiFault(409, `Another ${action} of instance ${instance.uuid} is still running.`);
    }
    throw error;
  }
}
