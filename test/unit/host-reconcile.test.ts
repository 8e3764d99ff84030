// What a compute host removes at start: only what the database does not place on it, and
// nothing an action in progress may be bringing to it.
import { describe, expect, it } from 'vitest';
import { leftoverReason } from '../../activities/host-reconcile.js';
import { TaskState } from '../../lib/nova.js';

describe('leftoverReason', () => {
  const here = 'host-a';

  it('keeps an instance the database places on this host, whatever its state', () => {
    expect(leftoverReason(here, { host: here, taskState: null, deleted: false })).toBeNull();
    expect(leftoverReason(here, { host: here, taskState: TaskState.SHELVING, deleted: false })).toBeNull();
  });

  it('keeps an instance an action holds, wherever the database places it', () => {
    expect(leftoverReason(here, { host: 'host-b', taskState: TaskState.SPAWNING, deleted: false })).toBeNull();
    expect(leftoverReason(here, { host: null, taskState: TaskState.UNSHELVING, deleted: false })).toBeNull();
  });

  it('removes an instance that is deleted, unknown, or settled elsewhere', () => {
    expect(leftoverReason(here, { host: null, taskState: null, deleted: true })).toBe('deleted');
    expect(leftoverReason(here, undefined)).toBe('unknown to the database');
    expect(leftoverReason(here, { host: 'host-b', taskState: null, deleted: false })).toBe('placed on host host-b');
    expect(leftoverReason(here, { host: null, taskState: null, deleted: false })).toBe('placed on no host');
  });
});
