#!/usr/bin/env node
// Events per second of this library next to `ledgertail append`, in the
// same run, on the same disk (fsync on, as in production):
//
//   node bench.mjs [--ledgertail PATH] [--singles N] [--batches N]
//
// single appends: one Writer.append per event (one lock, one fsync each);
// for the CLI one `ledgertail append` process per event. Batches of 1,000:
// Writer.appendBatch; for the CLI one process reading 1,000 payloads.
// Per log call: pino through this package's transport next to pino's own
// file transport (both on a worker thread), the time a call takes on the
// app's thread and the lines a second until the last one is written.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Writer } from './src/index.js';

let pino = null;
try { pino = (await import('pino')).default; } catch { /* a devDependency: npm ci */ }
const logCalls = Number(process.argv.includes('--log-calls') ? process.argv[process.argv.indexOf('--log-calls') + 1] : 5000);

/** [µs per call on the app's thread, lines/s until the transport closed]. */
async function pinoCost (target, options) {
  const transport = pino.transport({ target, options });
  await new Promise((resolve) => transport.on('ready', resolve));
  const log = pino(transport);
  const alive = setInterval(() => {}, 1000);
  const closed = new Promise((resolve) => transport.on('close', resolve));
  const start = process.hrtime.bigint();
  for (let i = 0; i < logCalls; i++) log.info(payload(i), 'order placed');
  const called = Number(process.hrtime.bigint() - start) / 1e3 / logCalls;
  transport.end();
  await closed;
  clearInterval(alive);
  return [called, logCalls / (Number(process.hrtime.bigint() - start) / 1e9)];
}

const args = process.argv.slice(2);
const opt = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : fallback; };
const singles = Number(opt('--singles', 300));
const batches = Number(opt('--batches', 10));
let binary = opt('--ledgertail', null);
const built = join(dirname(fileURLToPath(import.meta.url)), '../../target/release/ledgertail');
if (!binary && existsSync(built)) binary = built;

const payload = (i) => ({ order: i, customer: `c${i % 97}`, total: '19.90', items: [1, 2, 3] });
const folder = mkdtempSync(join(process.cwd(), 'lt-node-bench-'));
const rows = [];
const time = (fn) => { const t = process.hrtime.bigint(); fn(); return Number(process.hrtime.bigint() - t) / 1e9; };
try {
  // pino first: a worker thread must not load fs-ext again after one
  // that loaded it ended while this thread holds it (writer.js).
  if (pino) {
    const here = dirname(fileURLToPath(import.meta.url));
    var calls = [
      ['pino, its own file transport (pino/file)', await pinoCost('pino/file', { destination: join(folder, 'pino.log') })],
      ['pino, ledgertail-producer/pino (fsync per batch)', await pinoCost(join(here, 'src/pino.js'), { path: join(folder, 'pino-sealed.jsonl') })],
      ['pino, ledgertail-producer/pino (fsync: false)', await pinoCost(join(here, 'src/pino.js'), { path: join(folder, 'pino-nosync.jsonl'), fsync: false })]
    ];
  }
  let w = new Writer(join(folder, 'single.jsonl'));
  rows.push(['node, single appends', singles / time(() => { for (let i = 0; i < singles; i++) w.appendSync('bench', payload(i)); })]);
  w = new Writer(join(folder, 'batch.jsonl'));
  const batch = Array.from({ length: 1000 }, (_, i) => payload(i));
  rows.push(['node, batches of 1000', (batches * 1000) / time(() => { for (let b = 0; b < batches; b++) w.appendBatchSync('bench', batch); })]);
  if (binary) {
    const one = JSON.stringify(payload(0)) + '\n';
    const cli = (input, ledger) => { const r = spawnSync(binary, ['append', '--ledger', ledger, '--type', 'bench'], { input }); if (r.status !== 0) throw new Error(r.stderr.toString()); };
    rows.push(['ledgertail append, one process per event', singles / time(() => { for (let i = 0; i < singles; i++) cli(one, join(folder, 'cli-single.jsonl')); })]);
    const text = batch.map((p) => JSON.stringify(p) + '\n').join('');
    rows.push(['ledgertail append, 1000 per process', (batches * 1000) / time(() => { for (let b = 0; b < batches; b++) cli(text, join(folder, 'cli-batch.jsonl')); })]);
  }
} finally {
  rmSync(folder, { recursive: true });
}
console.log('| writer | events/s |\n|---|---|');
for (const [name, rate] of rows) console.log(`| ${name} | ${Math.round(rate).toLocaleString('en')} |`);
if (calls) {
  console.log(`\n| ${logCalls} pino log calls | µs per call, on the app's thread | lines/s until all are written |\n|---|---|---|`);
  for (const [name, [micros, rate]] of calls) console.log(`| ${name} | ${micros.toFixed(1)} | ${Math.round(rate).toLocaleString('en')} |`);
} else console.log('\n(pino is not installed: npm ci installs it)');
if (binary) console.log(`\nbatched: node ÷ ledgertail append = ${(rows[1][1] / rows[3][1]).toFixed(2)} (aim: ≥ 0.25)`);
else console.log('\n(no ledgertail binary found: pass --ledgertail PATH)');
