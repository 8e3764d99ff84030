// Nova's os-instance-actions: the actions log of a server the caller may see, and one action
// with its events (their details from 2.84).
import type { FastifyInstance } from 'fastify';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { ApiFault } from '../faults.js';
import { atLeast } from '../microversions.js';
import { actionProgress } from '../progress.js';
import { type RouteDependencies, visibleServer } from '../requests.js';
import { actionView } from '../views.js';

export function registerInstanceActionRoutes(app: FastifyInstance, { begin, pool, client }: RouteDependencies): void {
  app.get<{ Params: { id: string } }>('/v2.1/servers/:id/os-instance-actions', async (request, reply) => {
    const { context } = await begin(request, reply);
    const instance = await visibleServer(pool, context, request.params.id);
    const actions = await listInstanceActions(pool, instance.uuid);
    return { instanceActions: actions.map((action) => actionView(action, context, false)) };
  });

  app.get<{ Params: { id: string; requestId: string } }>(
    '/v2.1/servers/:id/os-instance-actions/:requestId',
    async (request, reply) => {
      const { context, version } = await begin(request, reply);
      const instance = await visibleServer(pool, context, request.params.id);
      const action = (await listInstanceActions(pool, instance.uuid)).find(
        (candidate) => candidate.requestId === request.params.requestId,
      );
      if (!action) throw new ApiFault(404, `Action for request_id ${request.params.requestId} not found`);
      // vm-shelve's extension: the running action's progress, from its workflow in Temporal.
      const progress = await actionProgress(client, pool, action, context.isAdmin);
      return { instanceAction: actionView(action, context, true, { details: atLeast(version, '2.84'), progress }) };
    },
  );
}
