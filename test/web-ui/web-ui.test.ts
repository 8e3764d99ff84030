// The Temporal Web UI as an operator uses it, in headless Chromium (Debian's, driven by
// playwright-core): filter by an instance's uuid, find its shelve, open it, see its steps and
// their summaries.
// Screenshots are kept in test-output/.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAction } from '../../lib/actions.js';
import { workflowId } from '../../lib/temporal.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import { type StubHost, startStubHost } from '../support/stub-host.js';

const output = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-output');

describe('the Temporal Web UI', () => {
  let stack: TestStack;
  let stub: StubHost;
  let browser: Browser;

  beforeAll(async () => {
    stack = await startTestStack();
    stub = await startStubHost(stack);
    await mkdir(output, { recursive: true });
    // The flags keep Chromium off the network it cannot reach here (see the env notes).
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await stub?.stop();
    await stack?.stop();
  });

  it("finds an instance's shelve by its uuid and shows the steps", async () => {
    const ui = process.env.TEMPORAL_UI_URL;
    if (!ui) throw new Error('TEMPORAL_UI_URL is not set: run the tests with npm test');
    const { uuid } = await stub.buildInstance();
    await (
      await startAction(stack.client, stack.config, 'shelve', { instanceUuid: uuid, shelvedOffloadTime: 0 })
    ).result();

    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    const namespace = stack.config.temporal.namespace;
    await page.goto(`${ui}/namespaces/${namespace}/workflows?query=${encodeURIComponent(`InstanceUuid="${uuid}"`)}`);
    const shelve = page.getByRole('link', { name: workflowId('shelve', uuid), exact: true });
    await shelve.waitFor({ timeout: 30_000 });
    await expect(page.getByRole('link', { name: workflowId('build', uuid), exact: true }).count()).resolves.toBe(1);
    await page.screenshot({ path: path.join(output, 'web-ui-instance-workflows.png') });

    await shelve.click();
    await page.getByText('shelveInstance').first().waitFor({ timeout: 30_000 });
    for (const step of [
      'claimInstance',
      'powerOffInstance',
      'createSnapshotImage',
      'snapshotInstance',
      'destroyInstance',
    ]) {
      await page.getByText(step).first().waitFor({ timeout: 30_000 });
    }
    // The workflow's summary, and the activities' summaries naming the steps they belong to.
    await page.getByText(`shelve instance ${uuid}`).first().waitFor({ timeout: 30_000 });
    for (const summary of ['powering off on', 'uploading the root disk into image']) {
      await page.getByText(summary).first().waitFor({ timeout: 30_000 });
    }
    await page.screenshot({ path: path.join(output, 'web-ui-shelve-workflow.png'), fullPage: true });
    await page.close();
  });
});
