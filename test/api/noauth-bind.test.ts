// Nova's noauth2 tokens let anyone be anyone: with them the API process serves loopback only,
// and refuses to start bound to any other address.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Runs api/main.ts until it says it listens (then stops it) or exits; returns its output and exit code. */
async function runApi(env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoDir, 'api', 'main.ts')], {
    cwd: repoDir,
    env: { ...process.env, AUTH_STRATEGY: 'noauth2', API_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = once(child, 'exit');
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('"msg":"API listening"')) child.kill('SIGTERM');
    });
  }
  const [code] = (await exited) as [number | null];
  return { code, output };
}

describe('the API process with noauth2 tokens', () => {
  it.each(['0.0.0.0', '::', '10.0.0.1'])('refuses to start bound to %s', async (host) => {
    const { code, output } = await runApi({ API_HOST: host });
    expect(code).toBe(2);
    expect(output).toContain('refusing to serve noauth2 tokens beyond loopback');
    expect(output).not.toContain('API listening');
  });

  it('starts on loopback', async () => {
    const { output } = await runApi({ API_HOST: '127.0.0.1' });
    expect(output).toContain('"msg":"API listening"');
    expect(output).toContain('"address":"http://127.0.0.1:');
  });
});
