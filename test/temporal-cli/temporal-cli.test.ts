// Workflows started with the real `temporal` binary, as docs/operations.md shows: they go through the
// same claims and checks as the API's, and can be found by their search attributes.
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getInstance } from '../../lib/db/instances.js';
import { listInstanceActions } from '../../lib/db/instance-actions.js';
import { PowerState } from '../../lib/nova.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

const run = promisify(execFile);

describe('the Temporal CLI', () => {
  let stack: TestStack;
  let stub: StubHost;

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack);
  });

  afterAll(async () => {
    await stub?.stop();
    await stack?.stop();
  });

  async function temporal(...args: string[]): Promise<string> {
    const binary = process.env.TEMPORAL_CLI;
    if (!binary) throw new Error('TEMPORAL_CLI is not set: run the tests with npm test');
    // TEMPORAL_TLS, TEMPORAL_TLS_CA, TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY, TEMPORAL_TLS_SERVER_NAME and
    // TEMPORAL_API_KEY are the Temporal CLI's own variables too: it reads them from the environment.
    const { stdout } = await run(binary, [...args, '--address', stack.config.temporal.address]);
    return stdout;
  }

  /**
   * `temporal workflow start` then `temporal workflow result`, as an operator would: the result's
   * output, and whether the workflow succeeded (the CLI prints a failure on stdout and exits 1).
   */
  async function startAndWait(type: string, id: string, input: unknown): Promise<{ ok: boolean; output: string }> {
    const queue = stack.config.temporal.conductorTaskQueue;
    await temporal(
      'workflow',
      'start',
      '--type',
      type,
      '--task-queue',
      queue,
      '--workflow-id',
      id,
      '--input',
      JSON.stringify(input),
    );
    return temporal('workflow', 'result', '--workflow-id', id).then(
      (output) => ({ ok: true, output }),
      (error: { stdout?: string }) => ({ ok: false, output: error.stdout ?? '' }),
    );
  }

  async function workflowIds(query: string): Promise<string[]> {
    const listed = JSON.parse(await temporal('workflow', 'list', '--query', query, '--output', 'json')) as {
      execution: { workflowId: string };
    }[];
    return listed.map(({ execution }) => execution.workflowId).sort();
  }

  it('shelves and unshelves an instance, and finds its workflows by their search attributes', async () => {
    const { uuid } = await stub.buildInstance();
    const shelve = await startAndWait('shelveInstance', workflowId('shelve', uuid), {
      instanceUuid: uuid,
      shelvedOffloadTime: 0,
    });
    expect(shelve.ok).toBe(true);
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'shelved_offloaded', taskState: null });
    const unshelve = await startAndWait('unshelveInstance', workflowId('unshelve', uuid), { instanceUuid: uuid });
    expect(unshelve.ok).toBe(true);
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', host: stub.host });

    const all = [workflowId('build', uuid), workflowId('shelve', uuid), workflowId('unshelve', uuid)].sort();
    expect(await workflowIds(`InstanceUuid="${uuid}"`)).toEqual(all);
    expect(await workflowIds(`ComputeHost="${stub.host}" AND InstanceUuid="${uuid}"`)).toEqual(all);
    expect(await workflowIds(`InstanceUuid="${uuid}" AND InstanceAction="unshelve"`)).toEqual([
      workflowId('unshelve', uuid),
    ]);
  });

  it('fails at once with the reason: a wrong state, an unknown instance, a malformed input', async () => {
    const { uuid } = await stub.buildInstance();
    const unknown = '00000000-0000-4000-8000-000000000000';
    const failures = [
      [{ instanceUuid: uuid }, `Cannot 'unshelve' instance ${uuid} while it is in vm_state active`],
      [{ instanceUuid: unknown }, `Instance ${unknown} could not be found.`],
      [{ uuid }, 'unshelveInstance expects an input like {"instanceUuid": "<uuid>"}'],
    ] as const;
    for (const [i, [input, reason]] of failures.entries()) {
      const { ok, output } = await startAndWait('unshelveInstance', `unshelve-cli-${i}-${uuid}`, input);
      expect(ok).toBe(false);
      expect(output).toContain(`Message: ${reason}`);
    }
    expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'active', taskState: null });
  });

  it('resets a running shelve started without a request id: the new run keeps the request id and finishes', async () => {
    // A host whose power-off waits for the test: the shelve is mid-action when it is reset.
    let releasePowerOff!: () => void;
    const powerOffReleased = new Promise<void>((resolve) => (releasePowerOff = resolve));
    const held = await startStubHost(stack, {
      async powerOffInstance() {
        await powerOffReleased;
        return PowerState.SHUTDOWN;
      },
    });
    try {
      const { uuid } = await held.buildInstance();
      const id = workflowId('shelve', uuid);
      const input = JSON.stringify({ instanceUuid: uuid, shelvedOffloadTime: 0 });
      const queue = stack.config.temporal.conductorTaskQueue;
      await temporal(
        'workflow',
        'start',
        '--type',
        'shelveInstance',
        '--task-queue',
        queue,
        '--workflow-id',
        id,
        '--input',
        input,
      );
      while ((await getInstance(stack.pool, uuid)).taskState !== 'shelving') await sleep(50);
      const [claimed] = await listInstanceActions(stack.pool, uuid);

      // As an operator would after a bad deploy: the run starts again from its first workflow task.
      await temporal(
        'workflow',
        'reset',
        '--workflow-id',
        id,
        '--type',
        'FirstWorkflowTask',
        '--reason',
        'the test resets it',
      );
      releasePowerOff();
      expect(await temporal('workflow', 'result', '--workflow-id', id)).toContain('shelved_offloaded');

      expect(await getInstance(stack.pool, uuid)).toMatchObject({ vmState: 'shelved_offloaded', taskState: null });
      const shelves = (await listInstanceActions(stack.pool, uuid)).filter((action) => action.action === 'shelve');
      expect(shelves).toHaveLength(1);
      expect(shelves[0]).toMatchObject({ requestId: claimed!.requestId, message: null });
      expect(shelves[0]!.finishTime).not.toBeNull();
    } finally {
      releasePowerOff();
      await held.stop();
    }
  });
});
