// The TypeScript declarations compile against a use of the whole API
// (tests/types.ts) with `tsc --strict`, resolving the package by its name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

test('the TypeScript declarations compile under --strict', () => {
  const tsc = join(here, '../node_modules/typescript/bin/tsc');
  const out = spawnSync(process.execPath, [tsc, '--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext',
    '--target', 'es2022', '--types', 'node', '--skipLibCheck', join(here, 'types.ts')], { cwd: join(here, '..') });
  assert.equal(out.status, 0, out.stdout.toString() + out.stderr.toString());
});
