import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Subprocesses run from argument lists, never through a shell, so no name or metadata can be
// read as a command; SQL carries values as parameters ($1, $2, …), never spliced into its text.
const shellImports = ['exec', 'execSync'].map((name) => ({
  name: 'node:child_process',
  importNames: [name],
  message: 'Run subprocesses with execFile or spawn and an argument list, never through a shell.',
}));
const query = "CallExpression[callee.property.name='query']";

export default tseslint.config(
  { ignores: ['node_modules/', '.stack/', 'test-output/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
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
);
