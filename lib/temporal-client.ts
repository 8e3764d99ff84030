// The clients' connection to Temporal (the API, the demo, the bench, the tests), made as the
// configuration says: TLS, a client certificate, an API key (lib/temporal-connection.ts).
import { Connection } from '@temporalio/client';
import type { Config } from './config.js';
import { temporalConnectionError, temporalConnectionOptions } from './temporal-connection.js';

/** Connects a client; a failure says where to, how, and why (a TLS refusal included). */
export async function connectClient(config: Config): Promise<Connection> {
  try {
    return await Connection.connect(temporalConnectionOptions(config.temporal));
  } catch (error) {
    throw await temporalConnectionError(config.temporal, error);
  }
}
