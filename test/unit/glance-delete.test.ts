// Deleting a shelve snapshot while Glance is still ending an upload that was just aborted: Glance
// then saves the image as it read it at the upload's start, protected again, between the unprotect
// and the delete. A real HTTP server on loopback plays that Glance.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { GlanceClient } from '../../lib/glance.js';

const protectedAnswer = '403 Forbidden\n\nImage is protected and cannot be deleted.';

describe('unprotectAndDelete', () => {
  let server: Server;
  let glance: GlanceClient;
  /** Per image: how many deletes are refused as protected before one succeeds. */
  const refusals = new Map<string, number>();
  const calls: string[] = [];

  beforeAll(async () => {
    server = createServer((request, response) => {
      const imageId = (request.url ?? '').split('/').pop()!;
      calls.push(`${request.method} ${imageId}`);
      if (request.method === 'PATCH') {
        request.resume();
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } else if (request.method === 'DELETE' && (refusals.get(imageId) ?? 0) > 0) {
        refusals.set(imageId, refusals.get(imageId)! - 1);
        response.writeHead(403, { 'content-type': 'text/plain' }).end(protectedAnswer);
      } else if (request.method === 'DELETE') {
        response.writeHead(204).end();
      } else {
        response.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    glance = new GlanceClient(loadConfig({ LIBVIRT_VIRT_TYPE: 'qemu', GLANCE_URL: `http://127.0.0.1:${port}` }).glance);
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('unprotects again and deletes when an aborted upload protected the image again', async () => {
    refusals.set('re-protected', 2);
    calls.length = 0;
    expect(await glance.unprotectAndDelete(glance.snapshotContext, 're-protected')).toBe(true);
    expect(calls).toEqual([
      'PATCH re-protected',
      'DELETE re-protected',
      'PATCH re-protected',
      'DELETE re-protected',
      'PATCH re-protected',
      'DELETE re-protected',
    ]);
  });

  it('gives up after five tries, with the refusal Glance gave', async () => {
    refusals.set('kept-protected', 100);
    calls.length = 0;
    await expect(glance.unprotectAndDelete(glance.snapshotContext, 'kept-protected')).rejects.toThrow(
      /HTTP 403.*is protected/,
    );
    expect(calls.filter((call) => call.startsWith('DELETE'))).toHaveLength(5);
  }, 30_000);
});
