// The Promise API: appends resolve once on disk, keep the event loop
// free while another writer holds the lock, run in call order, and reject
// with the same error classes (and fields) as the synchronous calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { KeyFile, PayloadError, UnfinishedLineError, Writer } from '../src/index.js';
import { run, tempDir, trustingConfig } from './helpers.mjs';

test('append and appendBatch resolve in call order with a valid signed chain', async () => {
  const dir = tempDir();
  const ledger = join(dir, 'a.jsonl');
  const key = KeyFile.generate('node');
  const w = new Writer(ledger, { key });
  const calls = [w.append('t', { n: 0 }), w.appendBatch('t', [{ n: 1 }, { n: 2 }]), w.append('t', { n: 3 })];
  const [first, batch, last] = await Promise.all(calls);
  assert.deepEqual([first.seq, ...batch.map((e) => e.seq), last.seq], [0, 1, 2, 3]);
  assert.equal(w.appendSync('t', { n: 4 }).seq, 4, 'sync and async share one chain');
  const config = trustingConfig(dir, ledger, { node: key.publicBase64() }, join(dir, 'm.db'));
  const out = run('verify', '--config', config);
  assert.equal(out.code, 0, out.text);
});

test('the event loop runs while another process holds the lock', async () => {
  const ledger = join(tempDir(), 'a.jsonl');
  new Writer(ledger).appendSync('t', 0);
  // flock(1) holds the same lock as every writer for a second.
  const holder = spawn('flock', ['--exclusive', ledger, 'sleep', '1']);
  await new Promise((resolve) => setTimeout(resolve, 200));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 20);
  const appended = await new Writer(ledger).append('t', 1);
  clearInterval(timer);
  holder.kill();
  assert.equal(appended.seq, 1);
  assert.ok(ticks >= 10, `the event loop ran ${ticks} times while the append waited`);
});

test('refusals reject with the library errors and leave the file as it was', async () => {
  const ledger = join(tempDir(), 'a.jsonl');
  const w = new Writer(ledger);
  await w.append('t', 0);
  await assert.rejects(w.append('t', NaN), (e) => e instanceof PayloadError && /NaN/.test(e.hint));
  await assert.rejects(w.appendBatch('t', [1, new Date(0)]), (e) => e instanceof PayloadError && e.index === 1 && /toISOString/.test(e.hint));
  appendFileSync(ledger, '{"seq"');
  const before = readFileSync(ledger);
  await assert.rejects(w.append('t', 2), (e) => e instanceof UnfinishedLineError && e.unfinished === 6 && e.hint.length > 0);
  assert.deepEqual(readFileSync(ledger), before);
});
