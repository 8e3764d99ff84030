// An offload whose removal from the host fails, on fake conductor activities and a stub compute
// host: the instance ends where it can be unshelved from, whatever the removal got done.
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PowerState } from '../../lib/nova.js';
import { shelveInstance } from '../../workflows/index.js';
import { createFakeConductor } from '../support/fake-activities.js';
import { type MockedTemporal, newHost, startMockedTemporal, stubCompute, withWorkers } from './environment.js';

describe('an offload whose removal fails', () => {
  let temporal: MockedTemporal;

  beforeAll(async () => {
    temporal = await startMockedTemporal();
  });

  afterAll(async () => {
    await temporal?.env.teardown();
  });

  /** A shelve that offloads at once, on a host whose destroy fails after it did `removedDomain`. */
  async function shelveWithFailingRemoval(removedDomain: boolean) {
    const host = newHost();
    const fake = createFakeConductor([host]);
    const instanceUuid = fake.addInstance(host);
    let domain = true;
    const compute = stubCompute(fake, {
      async destroyInstance() {
        if (removedDomain) domain = false;
        throw ApplicationFailure.nonRetryable('the instance folder could not be removed', 'HostDiskError');
      },
      async listInstancePowerStates() {
        return domain ? { [instanceUuid]: PowerState.SHUTDOWN } : {};
      },
    });
    const outcome = await withWorkers(temporal, fake, host, compute, (taskQueue) =>
      temporal.env.client.workflow
        .execute(shelveInstance, {
          taskQueue,
          workflowId: `shelve-${instanceUuid}`,
          args: [{ instanceUuid, shelvedOffloadTime: 0 }],
        })
        .catch((failure: unknown) => failure),
    );
    return { host, fake, instanceUuid, outcome };
  }

  it('after the domain went: offloaded, its snapshot kept, the action a success', async () => {
    const { fake, instanceUuid, outcome } = await shelveWithFailingRemoval(true);

    expect(outcome).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    const instance = fake.instance(instanceUuid);
    expect(instance).toMatchObject({ vmState: 'shelved_offloaded', taskState: null, host: null });
    expect(fake.images.get(instance.systemMetadata.shelved_image_id!)).toMatchObject({ status: 'active' });
    const [shelve] = fake.actions(instanceUuid);
    expect(shelve).toMatchObject({ action: 'shelve', message: null });
    expect(shelve!.events.at(-1)).toMatchObject({ event: 'compute_shelve_offload_instance', result: 'Error' });
  });

  it('with the domain still there: SHELVED on its host, free, the action Error', async () => {
    const { host, fake, instanceUuid, outcome } = await shelveWithFailingRemoval(false);

    expect(outcome).toBeInstanceOf(WorkflowFailedError);
    expect((outcome as WorkflowFailedError).cause).toMatchObject({ type: 'HostDiskError' });
    const instance = fake.instance(instanceUuid);
    expect(instance).toMatchObject({ vmState: 'shelved', taskState: null, host });
    expect(fake.images.get(instance.systemMetadata.shelved_image_id!)).toMatchObject({ status: 'active' });
    expect(fake.actions(instanceUuid)[0]).toMatchObject({ action: 'shelve', message: 'Error' });
  });
});
