// Every payload the contract's test vectors mirror, sealed by this
// library, has the manifest's canonical payload_jcs byte for byte, and the
// ledger it makes is one valid chain for `ledgertail verify`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Writer, canonical, strictParse } from '../src/index.js';
import { VECTORS, run, tempDir } from './helpers.mjs';

test('every vector payload seals to the manifest\'s canonical form', () => {
  const manifest = JSON.parse(readFileSync(join(VECTORS, 'manifest.json'), 'utf8'));
  const cases = [];
  for (const c of manifest.cases) {
    for (const line of c.expect.lines) {
      if (line.payload_jcs == null) continue;
      const raw = readFileSync(join(VECTORS, line.file)).subarray(line.offset, line.offset + line.length);
      cases.push([c.name, line, strictParse(raw.toString('utf8'))]);
    }
  }
  assert.ok(cases.length > 100);
  const ledger = join(tempDir(), 'vectors.jsonl');
  const w = new Writer(ledger, { fsync: false });
  for (const [name, line, event] of cases) {
    assert.equal(canonical(event.payload), line.payload_jcs, `${name} line ${line.line}`);
    w.appendSync('vector', event.payload);
  }
  const written = readFileSync(ledger, 'utf8').split('\n').filter(Boolean).map(strictParse);
  assert.deepEqual(written.map((e) => canonical(e.payload)), cases.map(([, l]) => l.payload_jcs));
  const out = run('verify', '--ledger', ledger);
  assert.equal(out.code, 0, out.text);
});
