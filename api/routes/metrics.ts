// Prometheus metrics of the API's process.
import type { FastifyInstance } from 'fastify';
import { registry } from '../../lib/metrics.js';
import { forbidden, type RouteDependencies } from '../requests.js';

export function registerMetricsRoutes(app: FastifyInstance, { begin }: RouteDependencies): void {
  // Admins only: the metrics name hosts and volumes of work.
  app.get('/metrics', async (request, reply) => {
    const { context } = await begin(request, reply);
    if (!context.isAdmin) throw forbidden('metrics');
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
}
