// Applies the database migrations in db/migrations (node-pg-migrate, SQL files).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import { loadConfig } from '../lib/config.js';

const config = loadConfig();
await runner({
  databaseUrl: config.databaseUrl,
  dir: path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../db/migrations'),
  direction: 'up',
  migrationsTable: 'pgmigrations',
  log: (message) => console.error(message),
});
