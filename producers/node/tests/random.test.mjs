// 1,000 random payloads (floats of every magnitude, member names that sort
// differently by UTF-16 than by code point, deep nesting, escapes),
// appended and signed by this library: `ledgertail verify` finds one valid
// signed chain (signatures required), and `ledgertail replay` mirrors rows
// whose payloads equal the ones given.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';

import { KeyFile, Writer, canonical, keygen, strictParse } from '../src/index.js';
import { mirroredPayloads, run, tempDir, trustingConfig } from './helpers.mjs';

// U+E000..U+FFFF sort after U+10000 and up by UTF-16, before them by code point.
const NAMES = ['a', 'B', '\u00e9', '\ufb01', '\uffff', '\u{1f600}', '\u{10000}', '\u20ac', '', ' ', '\x7f', '\\', '"', '\u2028'];

let state = 8785n;
function rand () { // xorshift64*: repeatable
  state ^= state >> 12n; state ^= (state << 25n) & 0xffffffffffffffffn; state ^= state >> 27n;
  return Number(((state * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) >> 11n) / 2 ** 53;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (n) => Math.floor(rand() * n);

function randomFloat () {
  for (;;) {
    let v;
    switch (int(4)) {
      case 0: { const b = new DataView(new ArrayBuffer(8)); b.setUint32(0, int(2 ** 32)); b.setUint32(4, int(2 ** 32)); v = b.getFloat64(0); break; }
      case 1: v = (rand() * 20 - 10) * 10 ** (int(628) - 320); break;
      case 2: v = pick([1e-7, 1e21, 1e-6, 1e20, 5e-324, 1.7976931348623157e308]) * pick([1, -1, 0.5, 1.0000001]); break;
      default: v = (int(2 ** 53) - 2 ** 52) / pick([1, 3, 7, 1024]);
    }
    if (Number.isFinite(v)) return v;
  }
}
const randomString = () => Array.from({ length: int(6) }, () => pick([...NAMES, '\n', '\t', '\0', '\x1f', '</script>', '\u{10ffff}', '\ud7ff', '\ue000'])).join('');

function randomValue (depth = 0) {
  switch (int(depth < 6 ? 8 : 5)) {
    case 0: return null;
    case 1: return rand() < 0.5;
    case 2: return int(2 ** 53) - 2 ** 52;
    case 3: return randomFloat();
    case 4: return randomString();
    case 5: return Array.from({ length: int(4) }, () => randomValue(depth + 1));
    default: {
      const o = {};
      for (let i = int(5); i > 0; i--) o[pick(NAMES) + randomString()] = randomValue(depth + 1);
      return o;
    }
  }
}

function deep (n) {
  let v = 'bottom';
  for (let i = 0; i < n; i++) v = i % 2 ? [v] : { '\u{1f600}': v };
  return v;
}

test('random payloads, signed, verify and replay to the same payloads', () => {
  const dir = tempDir();
  const payloads = Array.from({ length: 990 }, () => randomValue());
  payloads.push(...[50, 100, 120, 127].map(deep));
  for (let i = 0; i < 6; i++) payloads.push({ '\ufb01': 1, '\u{1f600}': 2, '\ue000': 3, '\u{10000}': 4 });
  const key = keygen(join(dir, 'node.key'), 'node-key');
  const ledger = join(dir, 'app.jsonl');
  const w = new Writer(ledger, { key: KeyFile.load(join(dir, 'node.key')) });
  for (let i = 0; i < payloads.length;) {
    const n = pick([1, 1, 7, 50]);
    if (n === 1) w.appendSync('random', payloads[i], { id: `e${i}` });
    else w.appendBatchSync('random', payloads.slice(i, i + n), { ids: payloads.slice(i, i + n).map((_, j) => `e${i + j}`) });
    i += n;
  }
  const db = join(dir, 'mirror.db');
  const config = trustingConfig(dir, ledger, { [key.keyId]: key.publicBase64() }, db);
  const verified = run('verify', '--config', config);
  assert.equal(verified.code, 0, verified.text);
  assert.match(verified.text, /1000 events/);
  const replayed = run('replay', '--config', config);
  assert.equal(replayed.code, 0, replayed.text);
  const rows = mirroredPayloads(db);
  assert.equal(rows.length, payloads.length);
  rows.forEach((row, i) => assert.equal(canonical(strictParse(row)), canonical(payloads[i]), `payload ${i}`));
});
