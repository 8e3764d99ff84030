// Section 3: what orchestration costs per action. A tiny disk keeps the real work short; each
// action's end-to-end time (request to result, as a client sees it) minus the time its
// activities spent working (from the workflow history) is the overhead.
import type { RunContext } from './context.js';
import { activityMilliseconds } from './history.js';
import type { Figure } from './stats.js';
import { benchFlavor, buildInstance, shelve, type Timed, unshelve } from './vm-shelve.js';

const ACTIONS = ['build', 'shelve', 'unshelve'] as const;
type Measured = Record<(typeof ACTIONS)[number], number[]>;

export async function benchOverhead(ctx: RunContext): Promise<Figure[]> {
  const { bench, kvm, print } = ctx;
  const endToEnd: Measured = { build: [], shelve: [], unshelve: [] };
  const overhead: Measured = { build: [], shelve: [], unshelve: [] };
  for (let run = 1; run <= ctx.runs; run++) {
    const built = await buildInstance(bench, {
      host: kvm.host,
      imageRef: ctx.tinyImageId,
      flavor: benchFlavor('tiny', 1),
      name: 'overhead',
    });
    const uuid = built.instance.uuid;
    const timed = {
      build: built,
      shelve: await shelve(bench, uuid),
      unshelve: await unshelve(bench, uuid, kvm.host),
    } satisfies Record<(typeof ACTIONS)[number], Timed>;
    for (const action of ACTIONS) {
      const total = timed[action].seconds * 1000;
      endToEnd[action].push(total);
      overhead[action].push(total - (await activityMilliseconds(timed[action].handle)));
    }
    await bench.leftovers.removeInstance(uuid);
    print(
      `overhead run ${run}/${ctx.runs}: ` +
        ACTIONS.map(
          (action) => `${action} ${overhead[action].at(-1)!.toFixed(0)} ms of ${endToEnd[action].at(-1)!.toFixed(0)}`,
        ).join(', '),
    );
  }
  return ACTIONS.flatMap((action): Figure[] => [
    {
      section: 'overhead',
      name: `${action}: orchestration overhead`,
      unit: 'ms',
      samples: overhead[action],
      target: { bound: 'at most', value: 150 },
      digits: 0,
    },
    { section: 'overhead', name: `${action}: end to end`, unit: 'ms', samples: endToEnd[action], digits: 0 },
  ]);
}
