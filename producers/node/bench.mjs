#!/usr/bin/env node
// Events per second of this library next to `ledgertail append`, in the
// same run, on the same disk (fsync on, as in production):
//
//   node bench.mjs [--ledgertail PATH] [--singles N] [--batches N]
//
// single appends: one Writer.append per event (one lock, one fsync each);
// for the CLI one `ledgertail append` process per event. Batches of 1,000:
// Writer.appendBatch; for the CLI one process reading 1,000 payloads.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Writer } from './src/index.js';

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
if (binary) console.log(`\nbatched: node ÷ ledgertail append = ${(rows[1][1] / rows[3][1]).toFixed(2)} (aim: ≥ 0.25)`);
else console.log('\n(no ledgertail binary found: pass --ledgertail PATH)');
