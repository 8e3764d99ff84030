// The UPDATE a save builds (lib/db/task-states.ts): only the changed columns, every value a
// parameter, and the task_states it accepts, null among them only when expected or set.
import { describe, expect, it } from 'vitest';
import { saveStatement } from '../../lib/db/task-states.js';
import { PowerState } from '../../lib/nova.js';

const held = { instanceUuid: 'uuid', requestId: 'req' };
const oneLine = (text: string) => text.replace(/\s+/g, ' ');

describe('saveStatement', () => {
  it('sets only the changed columns, as parameters, and launched_at from the database clock', () => {
    const { text, values } = saveStatement({
      ...held,
      expectedTaskStates: ['spawning'],
      changes: { vmState: 'active', taskState: null, host: 'h1', launched: true },
    });
    expect(oneLine(text)).toBe(
      'UPDATE instances SET updated_at = now(), vm_state = $3, task_state = $4, host = $5, launched_at = now() ' +
        'WHERE uuid = $1 AND task_request_id = $2 AND (task_state = ANY($6) OR task_state IS NULL)',
    );
    // The new task_state (null) is accepted too: a retry of a save that committed.
    expect(values).toEqual(['uuid', 'req', 'active', null, 'h1', ['spawning']]);
  });

  it('accepts no null task_state unless one is expected or set, and a cleared host is still written', () => {
    const { text, values } = saveStatement({
      ...held,
      expectedTaskStates: ['shelving_offloading'],
      changes: { taskState: 'spawning', host: null },
    });
    expect(oneLine(text)).toBe(
      'UPDATE instances SET updated_at = now(), task_state = $3, host = $4 ' +
        'WHERE uuid = $1 AND task_request_id = $2 AND (task_state = ANY($5))',
    );
    expect(values).toEqual(['uuid', 'req', 'spawning', null, ['shelving_offloading', 'spawning']]);
  });

  it('with no task change, accepts exactly the expected task_states, null included when expected', () => {
    const { text, values } = saveStatement({
      ...held,
      expectedTaskStates: [null],
      changes: { powerState: PowerState.SHUTDOWN },
    });
    expect(oneLine(text)).toContain('power_state = $3');
    expect(oneLine(text)).toContain('(task_state = ANY($4) OR task_state IS NULL)');
    expect(values).toEqual(['uuid', 'req', PowerState.SHUTDOWN, []]);
  });
});
