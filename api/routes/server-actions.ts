// POST /servers/{id}/action, with the actions this API serves: shelve, shelveOffload, unshelve
// (each a workflow, started once the instance is claimed) and os-resetState.
import { WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { FastifyInstance } from 'fastify';
import { selectDestination } from '../../lib/db/placement.js';
import { claimHolder, resetInstanceState } from '../../lib/db/task-states.js';
import { type Instance, VmState } from '../../lib/nova.js';
import { targetZone } from '../../lib/scheduler.js';
import { resetStateRequest, unshelveRequest } from '../action-bodies.js';
import { ApiFault } from '../faults.js';
import { claimAndStart, forbidden, type RouteDependencies, visibleServer } from '../requests.js';

/** The actions of POST /servers/{id}/action this API serves. */
const SERVER_ACTIONS = ['shelve', 'shelveOffload', 'unshelve', 'os-resetState'] as const;

export function registerServerActionRoutes(app: FastifyInstance, deps: RouteDependencies): void {
  const { pool, client, begin } = deps;

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
    const instance = await visibleServer(pool, context, request.params.id);
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
      await selectDestination(pool, {
        instanceUuid: instance.uuid,
        flavor: instance.flavor,
        availabilityZone: targetZone(unshelve, instance),
        requestedHost: unshelve.host,
      }).catch((error: unknown) => {
        if (error instanceof ApplicationFailure && error.type === 'NoValidHost') return;
        throw error;
      });
    }

    await claimAndStart(deps, request, context, instance, action, unshelve);
    reply.code(202).send();
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
}
