// The rules of `ledgertail append` (contract §4): bad payloads and a
// ledger ending in an unfinished line are refused with the file unchanged
// byte for byte; the head is found from the end of the live file (garbage
// and over-long lines after it skipped) or of the newest rotated file;
// key files interoperate with `ledgertail keygen` both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { HeadCompressedError, KeyFile, KeyFileError, PayloadError, UnfinishedLineError, Writer, keygen, strictParse } from '../src/index.js';
import { run, tempDir, trustingConfig } from './helpers.mjs';

class Thing { constructor () { this.a = 1; } }
const BAD = [NaN, Infinity, -Infinity, 10n, undefined, () => 1, Symbol('s'), new Date(0), new Map(), new Set([1]), new Thing(),
  new Uint8Array(2), '\ud800 lone', { ['\udc00']: 1 }, { a: undefined }, [1, undefined], { [Symbol('k')]: 1 }];

test('bad payloads are refused and nothing is written', () => {
  const ledger = join(tempDir(), 'a.jsonl');
  const w = new Writer(ledger);
  w.appendBatchSync('t', [0, 1]);
  const before = readFileSync(ledger);
  for (const bad of BAD) {
    assert.throws(() => w.appendSync('t', bad), PayloadError, String(bad));
    assert.throws(() => w.appendBatchSync('t', [1, bad, 2]), (e) => e instanceof PayloadError && e.index === 1);
    assert.deepEqual(readFileSync(ledger), before);
  }
  for (const text of ['{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', 'NaN', '[Infinity]', '1e400', '9007199254740993', '{']) {
    assert.throws(() => strictParse(text), PayloadError, text);
  }
  assert.equal(strictParse('18446744073709552000'), 18446744073709552000);
  let tooDeep = [];
  for (let i = 0; i < 127; i++) tooDeep = [tooDeep]; // 128 levels
  assert.throws(() => w.appendSync('t', tooDeep), /deeper/);
  assert.throws(() => new Writer(ledger, { maxLineBytes: 300 }).appendSync('t', 'x'.repeat(300)), /line limit/);
  for (const badType of ['', 'x'.repeat(257), 7]) assert.throws(() => w.appendSync(badType, 1), PayloadError);
  assert.throws(() => w.appendSync('t', 1, { extensions: { seq: 9 } }), /member of every event/);
  assert.throws(() => w.appendSync('t', 1, { id: '' }), PayloadError);
  assert.deepEqual(readFileSync(ledger), before);
  assert.equal(w.appendSync('t', 2).seq, 2, 'no seq used up');
});

test('an unfinished last line is refused with the file unchanged', () => {
  const ledger = join(tempDir(), 'a.jsonl');
  new Writer(ledger).appendSync('t', 0);
  appendFileSync(ledger, '{"half');
  const before = readFileSync(ledger);
  assert.throws(() => new Writer(ledger).appendSync('t', 1), (e) => e instanceof UnfinishedLineError && e.unfinished === 6);
  assert.deepEqual(readFileSync(ledger), before);
});

test('the head is found from the end, past garbage and long lines', () => {
  const ledger = join(tempDir(), 'a.jsonl');
  new Writer(ledger).appendBatchSync('t', [0, 1]);
  appendFileSync(ledger, 'garbage\n{}\n\n{"x":"' + 'y'.repeat(200000) + '"}\n');
  assert.equal(new Writer(ledger, { maxLineBytes: 100000 }).appendSync('t', 2).seq, 2);
  const forged = JSON.parse(readFileSync(ledger, 'utf8').split('\n')[0]);
  forged.seq = 40;
  appendFileSync(ledger, JSON.stringify(forged) + '\n');
  assert.equal(new Writer(ledger).appendSync('t', 3).seq, 3);
  assert.match(run('verify', '--ledger', ledger).text, /4 events in the chain/);
});

test('the head comes from the newest rotated file', () => {
  const dir = tempDir();
  const ledger = join(dir, 'a.jsonl');
  const w = new Writer(ledger);
  w.appendBatchSync('t', [0, 1]);
  renameSync(ledger, join(dir, 'a.jsonl.2'));
  w.appendSync('t', 2);
  renameSync(ledger, join(dir, 'a.jsonl.1'));
  writeFileSync(join(dir, 'a.jsonl.bak'), 'not an event\n');
  symlinkSync(join(dir, 'a.jsonl.2'), join(dir, 'a.jsonl.link'));
  assert.equal(new Writer(ledger).appendSync('t', 3).seq, 3);
});

test('a compressed rotated file refuses a new chain', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'a.jsonl.1.gz'), '\x1f\x8b compressed');
  assert.throws(() => new Writer(join(dir, 'a.jsonl')).appendSync('t', 0), HeadCompressedError);
  assert.equal(readFileSync(join(dir, 'a.jsonl')).length, 0);
});

test('key files interoperate with ledgertail keygen', () => {
  const dir = tempDir();
  const made = run('keygen', '--out', join(dir, 'rust.key'), '--key-id', 'rust');
  assert.equal(made.code, 0, made.text);
  const rustKey = KeyFile.load(join(dir, 'rust.key'));
  assert.ok(made.stdout.includes(rustKey.trustLine()), made.stdout);
  const ledger = join(dir, 'app.jsonl');
  new Writer(ledger, { key: rustKey }).appendBatchSync('t', [{ by: 'node' }, { by: 'node' }, { by: 'node' }]);
  const nodeKey = keygen(join(dir, 'node.key'));
  assert.equal(nodeKey.keyId, 'node');
  assert.equal(statSync(join(dir, 'node.key')).mode & 0o777, 0o600);
  assert.throws(() => keygen(join(dir, 'node.key')), /never overwritten/);
  const appended = run('append', '--ledger', ledger, '--key', join(dir, 'node.key'), { input: '{"by":"ledgertail"}\n' });
  assert.equal(appended.code, 0, appended.text);
  const config = trustingConfig(dir, ledger, { rust: rustKey.publicBase64(), node: nodeKey.publicBase64() }, join(dir, 'm.db'));
  const verified = run('verify', '--config', config);
  assert.equal(verified.code, 0, verified.text);
  assert.match(verified.text, /4 events/);
  writeFileSync(join(dir, 'bad.key'), '{"key_id":"x","seed":"AAAA"}');
  assert.throws(() => KeyFile.load(join(dir, 'bad.key')), /32 bytes/);
  writeFileSync(join(dir, 'extra.key'), `{"key_id":"x","seed":"${'A'.repeat(43)}=","more":1}`);
  assert.throws(() => KeyFile.load(join(dir, 'extra.key')), /exactly/);
  assert.ok(!JSON.stringify(rustKey).includes('seed'));
  chmodSync(join(dir, 'rust.key'), 0o644);
  const warned = [];
  const onWarning = (w) => warned.push(w.message);
  process.on('warning', onWarning);
  KeyFile.load(join(dir, 'rust.key'));
  return new Promise((resolve) => setImmediate(() => {
    process.off('warning', onWarning);
    assert.ok(warned.some((m) => m.includes('chmod 600')), String(warned));
    resolve();
  }));
});

test('a write that fails midway leaves only whole lines', () => {
  const ledger = join(tempDir(), 'a.jsonl');
  new Writer(ledger).appendSync('t', 0);
  const size = statSync(ledger).size;
  const script = `
    process.on('SIGXFSZ', () => {}); // a write past the limit then fails with EFBIG
    const { Writer, WriteError } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
    try {
      new Writer(process.argv[1]).appendBatchSync('t', Array.from({ length: 20 }, (_, n) => ({ n, pad: 'x'.repeat(80) })));
    } catch (e) {
      if (!(e instanceof WriteError)) throw e;
      console.log(e.appended.length, e.message);
      process.exit(3);
    }`;
  const out = spawnSync('prlimit', [`--fsize=${size + 1000}`, process.execPath, '--input-type=module', '-e', script, ledger]);
  assert.equal(out.status, 3, out.stderr.toString());
  const reached = Number(out.stdout.toString().split(' ')[0]);
  assert.ok(reached > 0 && reached < 20 && out.stdout.toString().includes('partial bytes were removed'), out.stdout.toString());
  const data = readFileSync(ledger);
  assert.equal(data.at(-1), 0x0a);
  assert.equal(data.toString().split('\n').filter(Boolean).length, 1 + reached);
  assert.equal(new Writer(ledger).appendSync('t', 1).seq, 1 + reached);
});

test('a last line with a member named __proto__ is the head, not garbage (no fork)', () => {
  const dir = tempDir();
  const ledger = join(dir, 'a.jsonl');
  new Writer(ledger).appendSync('t', 0);
  // The CLI writes an event whose extension member is named __proto__
  // (valid JSON; Python writes it too).
  const out = run('append', '--ledger', ledger, '--type', 't', { input: '1\n' });
  assert.equal(out.code, 0, out.text);
  const lines = readFileSync(ledger, 'utf8').trimEnd().split('\n');
  const py = spawnSync('python3', ['-c', `
import hashlib, json, sys, rfc8785
prev = json.loads(sys.argv[1])
e = {"seq": prev["seq"] + 1, "ts": "2026-12-06T00:00:00Z", "type": "t", "payload": 2, "prev_hash": prev["hash"], "__proto__": {"x": 1}}
e["hash"] = hashlib.sha256(rfc8785.dumps(e)).hexdigest()
print(json.dumps(e, separators=(",", ":")))`, lines.at(-1)]);
  if (py.status !== 0) throw new Error(py.stderr.toString());
  appendFileSync(ledger, py.stdout);
  assert.equal(new Writer(ledger).appendSync('t', 3).seq, 3);
  const verified = run('verify', '--ledger', ledger);
  assert.equal(verified.code, 0, verified.text);
});

test('each kind of bad value gets its own hint', () => {
  const w = new Writer(join(tempDir(), 'a.jsonl'));
  const hint = (bad) => { try { w.appendSync('t', bad); } catch (e) { return e.hint; } return null; };
  assert.match(hint(NaN), /NaN/);
  assert.match(hint(10n), /2\^53/);
  assert.match(hint(new Date(0)), /toISOString/);
  assert.match(hint(new Map()), /fromEntries/);
  assert.doesNotMatch(hint(new Date(0)), /2\^53/);
  assert.match(strictParse.length === 1 ? (() => { try { strictParse('{"n":12345678901234567890}'); } catch (e) { return e.hint; } })() : '', /2\^53/);
});
