// The package stands on its own: `npm pack` ships its modules, types and
// README, and nothing of its tests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

test('npm pack ships the modules, the types and the README', () => {
  const out = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: join(dirname(fileURLToPath(import.meta.url)), '..') });
  assert.equal(out.status, 0, out.stderr.toString());
  const files = JSON.parse(out.stdout.toString())[0].files.map((f) => f.path);
  for (const f of ['package.json', 'README.md', 'src/index.js', 'src/index.d.ts', 'src/seal.js', 'src/head.js', 'src/writer.js', 'src/keyfile.js', 'src/errors.js']) {
    assert.ok(files.includes(f), `${f} in ${files}`);
  }
  assert.ok(!files.some((f) => f.startsWith('tests/')), String(files));
});
