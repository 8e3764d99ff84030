import { builtinModules } from 'node:module';
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

// Subprocesses run from argument lists, never through a shell, so no name or metadata can be
// read as a command; SQL carries values as parameters ($1, $2, …), never spliced into its text.
const shellImports = ['exec', 'execSync'].map((name) => ({
  name: 'node:child_process',
  importNames: [name],
  message: 'Run subprocesses with execFile or spawn and an argument list, never through a shell.',
}));
const query = "CallExpression[callee.property.name='query']";

// Code the workflow sandbox runs: workflows and the pure modules they import. Temporal's bundler
// refuses Node built-ins only when a worker starts; the linter says so in the editor.
const sandboxFiles = ['workflows/**/*.ts', 'lib/nova.ts', 'lib/scheduler.ts', 'lib/temporal.ts'];
const notInSandbox = [
  ...builtinModules.flatMap((name) => [name, `node:${name}`]),
  'pg',
  '@temporalio/activity',
  '@temporalio/client',
  '@temporalio/worker',
].map((name) => ({ name, message: 'Workflow code runs in the sandbox: no Node built-ins, I/O or client libraries.' }));

export default tseslint.config(
  { ignores: ['node_modules/', '.stack/', 'test-output/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['eslint.config.js'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { 'import-x': importX },
    // Imports name './x.js' for './x.ts' (NodeNext): resolved as TypeScript resolves them.
    settings: {
      'import-x/resolver-next': [createTypeScriptImportResolver()],
      'import-x/extensions': ['.ts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts'] },
    },
    rules: {
      // Forgetting to await an activity, a workflow API or a query is a bug, not a style.
      '@typescript-eslint/no-floating-promises': 'error',
      'import-x/no-cycle': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'no-restricted-imports': [
        'error',
        { paths: [...shellImports, ...shellImports.map((rule) => ({ ...rule, name: 'child_process' }))] },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: "Property[key.name='shell'][value.value!=false]",
          message: 'Run subprocesses from an argument list, without a shell.',
        },
        {
          selector: `${query} > TemplateLiteral.arguments:first-child[expressions.length>0]`,
          message: 'Pass values to SQL as parameters ($1, $2, …), not inside the query text.',
        },
        {
          selector: `${query} > BinaryExpression.arguments:first-child`,
          message: 'Pass values to SQL as parameters ($1, $2, …), not by concatenating the query text.',
        },
      ],
    },
  },
  {
    files: sandboxFiles,
    rules: { 'no-restricted-imports': ['error', { paths: [...shellImports, ...notInSandbox] }] },
  },
  {
    // One import source for each SDK name: workflow code takes from @temporalio/workflow every name
    // it re-exports from @temporalio/common.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...shellImports,
            ...notInSandbox,
            {
              name: '@temporalio/common',
              importNames: [
                'ActivityCancellationType',
                'ActivityFailure',
                'ApplicationFailure',
                'CancelledFailure',
                'ChildWorkflowFailure',
                'TemporalFailure',
                'TerminatedFailure',
                'TimeoutFailure',
              ],
              message: 'In workflow code, import this from @temporalio/workflow.',
            },
          ],
        },
      ],
    },
  },
);
