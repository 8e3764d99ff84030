// Prometheus metrics of this process (prom-client). The API serves them at /metrics; each worker
// serves its own at METRICS_PORT.
import { createServer, type Server } from 'node:http';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'vm_shelve_' });

export const actionsStarted = new Counter({
  name: 'vm_shelve_actions_started_total',
  help: 'Actions that claimed an instance, by action',
  labelNames: ['action'] as const,
  registers: [registry],
});

export const actionsFinished = new Counter({
  name: 'vm_shelve_actions_finished_total',
  help: 'Actions that ended, by action and result (Success or Error)',
  labelNames: ['action', 'result'] as const,
  registers: [registry],
});

export const stepDuration = new Histogram({
  name: 'vm_shelve_step_duration_seconds',
  help: 'How long each step of an action took, by event and result',
  labelNames: ['event', 'result'] as const,
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900],
  registers: [registry],
});

export const bytesMoved = new Counter({
  name: 'vm_shelve_image_bytes_total',
  help: 'Disk image bytes moved between compute hosts and Glance, by direction (upload or download)',
  labelNames: ['direction'] as const,
  registers: [registry],
});

/** Serves /metrics on its own port (for the workers); port 0 turns it off. */
export function serveMetrics(host: string, port: number): Server | undefined {
  if (port === 0) return undefined;
  const server = createServer((request, response) => {
    if (request.url !== '/metrics') {
      response.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (error: Error) => response.writeHead(500).end(error.message),
    );
  });
  return server.listen(port, host);
}
