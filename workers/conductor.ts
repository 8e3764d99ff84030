// The conductor worker: the workflows, and the activities on PostgreSQL, Glance and Temporal;
// it makes sure the reconciler's schedule exists as configured.
import { fileURLToPath } from 'node:url';
import { Client } from '@temporalio/client';
import { type NativeConnection, Worker } from '@temporalio/worker';
import type pg from 'pg';
import { createActionLogActivities } from '../activities/action-log.js';
import { createDatabaseActivities } from '../activities/database.js';
import { createImageActivities } from '../activities/images.js';
import { createReconcilerActivities } from '../activities/reconciler.js';
import { createSettingsActivities } from '../activities/settings.js';
import { createTemporalActivities } from '../activities/temporal.js';
import { type Config, loadConfig } from '../lib/config.js';
import { GlanceClient } from '../lib/glance.js';
import { logger } from '../lib/logger.js';
import { ensureReconcileSchedule } from '../lib/reconcile-schedule.js';
import { connectClient } from '../lib/temporal-client.js';
import { serveMetrics } from '../lib/metrics.js';
import { connectWorker, installRuntimeLogging, isMain } from './runtime.js';
import { createPool } from '../lib/postgres.js';

export async function createConductorWorker(config: Config, connection: NativeConnection, pool: pg.Pool) {
  const glance = new GlanceClient(config.glance);
  return Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.conductorTaskQueue,
    workflowsPath: fileURLToPath(new URL('../workflows/index.ts', import.meta.url)),
    interceptors: { workflowModules: [fileURLToPath(new URL('../workflows/interceptors.ts', import.meta.url))] },
    activities: {
      ...createDatabaseActivities(pool),
      ...createActionLogActivities(pool),
      ...createImageActivities(glance),
      ...createSettingsActivities(config),
      ...createTemporalActivities(),
      ...createReconcilerActivities(pool, glance),
    },
  });
}

if (isMain(import.meta.url)) {
  installRuntimeLogging();
  const config = loadConfig();
  const metrics = serveMetrics('127.0.0.1', config.metricsPort);
  const pool = createPool(config.databaseUrl);
  const worker = await createConductorWorker(config, await connectWorker(config), pool);
  if (config.reconcileInterval > 0) {
    const connection = await connectClient(config);
    await ensureReconcileSchedule(new Client({ connection, namespace: config.temporal.namespace }), config);
    await connection.close();
  }
  logger.info({ taskQueue: config.temporal.conductorTaskQueue }, 'conductor worker started');
  await worker.run();
  metrics?.close();
  await pool.end();
}
