// Runs the HTTP API. Tokens are Nova's noauth2 development tokens ("user:project"), so it serves
// loopback only and refuses to start bound to any other address.
import { isIP } from 'node:net';
import { Client, Connection } from '@temporalio/client';
import pg from 'pg';
import { loadConfig } from '../lib/config.js';
import { logger } from '../lib/logger.js';
import { buildApi } from './server.js';

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

const config = loadConfig();
if (!isLoopback(config.api.host)) {
  logger.fatal({ host: config.api.host }, 'refusing to serve noauth tokens beyond loopback: set API_HOST to 127.0.0.1');
  process.exit(2);
}
const pool = new pg.Pool({ connectionString: config.databaseUrl });
const connection = await Connection.connect({ address: config.temporal.address });
const app = buildApi({ config, pool, client: new Client({ connection, namespace: config.temporal.namespace }) });
const address = await app.listen({ host: config.api.host, port: config.api.port });
logger.info({ address }, 'API listening');
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void app.close().then(() => Promise.all([pool.end(), connection.close()]));
  });
}
