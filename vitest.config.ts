import { configDefaults, defineConfig } from 'vitest/config';

/** Tests that need no stack: no PostgreSQL, no Glance, no libvirtd, no shared Temporal server. */
const fast = ['test/unit/**/*.test.ts', 'test/workflows-mocked/**/*.test.ts'];

export default defineConfig({
  test: {
    reporters: ['default'],
    // `vitest run` runs both projects, the fast one first; `vitest run --project fast` (npm run test:fast) only it.
    projects: [
      {
        extends: true,
        test: {
          name: 'fast',
          include: fast,
          // Each workflow test file starts a Temporal dev server of its own.
          testTimeout: 30_000,
          hookTimeout: 60_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'stack',
          include: ['test/**/*.test.ts'],
          exclude: [...configDefaults.exclude, ...fast],
          // The end-to-end files share one stack and one host's VMs: one file at a time.
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
