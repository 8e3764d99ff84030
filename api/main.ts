// Runs the HTTP API. Nova's noauth2 development tokens ("user:project") let anyone be anyone, so
// with them it serves loopback only and refuses to start bound to any other address; with
// Keystone tokens it may listen anywhere.
import { isIP } from 'node:net';
import { Client } from '@temporalio/client';
import { loadConfig } from '../lib/config.js';
import { connectClient } from '../lib/temporal-client.js';
import { logger } from '../lib/logger.js';
import { buildApi } from './server.js';
import { createPool } from '../lib/postgres.js';

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

const config = loadConfig();
if (config.auth.strategy === 'noauth2' && !isLoopback(config.api.host)) {
  logger.fatal(
    { host: config.api.host },
    'refusing to serve noauth2 tokens beyond loopback: set API_HOST to 127.0.0.1, or AUTH_STRATEGY=keystone',
  );
  process.exit(2);
}
const pool = createPool(config.databaseUrl);
const connection = await connectClient(config);
const app = buildApi({ config, pool, client: new Client({ connection, namespace: config.temporal.namespace }) });
const address = await app.listen({ host: config.api.host, port: config.api.port });
logger.info({ address, auth: config.auth }, 'API listening');
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void app.close().then(() => Promise.all([pool.end(), connection.close()]));
  });
}
