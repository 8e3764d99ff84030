// The workflows the conductor worker runs.
export { buildInstance } from './build.js';
export { deleteInstance } from './delete.js';
export { shelveOffloadInstance } from './offload.js';
export { shelvedOffloadTimer } from './offload-timer.js';
export { reconcileInstances } from './reconcile.js';
export { shelveInstance } from './shelve.js';
export { unshelveInstance } from './unshelve.js';
