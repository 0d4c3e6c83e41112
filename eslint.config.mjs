import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'bin/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    // The protocol codecs and the core and cluster state machines are pure: no sockets, files, timers or clocks.
    files: ['src/protocol/**/*.ts', 'src/core/**/*.ts', 'src/cluster/liveness.ts', 'src/cluster/machine*.ts', 'src/cluster/witness-rules.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['node:*', 'fs', 'net', 'dgram', 'child_process', 'timers', 'os', '../io/*', '../../io/*', '../storage/*', '../../storage/*',
          // storage/metadata is pure (types and codec, no imports): core/ may use its Generations and DiskState
          '!../storage/metadata'],
          message: 'protocol/ and core/ are pure: I/O belongs in io/ or storage/' },
      ] }],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval', 'setImmediate', 'Date', 'process'],
    },
  },
  {
    // The sync link, heartbeats and witness requests are MAC'd with derived keys:
    // node:crypto is the one node module their codecs may import. The other restrictions stay.
    files: ['src/protocol/sync/**/*.ts', 'src/protocol/heartbeat/**/*.ts', 'src/protocol/witness/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['node:*', '!node:crypto', 'fs', 'net', 'dgram', 'child_process', 'timers', 'os', '../io/*', '../../io/*', '../storage/*', '../../storage/*'],
          message: 'protocol/ is pure: I/O belongs in io/ or storage/ (the MAC codecs may import node:crypto only)' },
      ] }],
    },
  },
);
