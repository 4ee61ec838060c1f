// The pino transport (`ledgertail-producer/pino`) with the real pino: each
// log line sealed, `ledgertail verify` accepting the ledger, several
// processes logging into one ledger at once, and lines pino writes that
// the ledger would not take as they are.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import pino from 'pino';

import { Writer, strictParse } from 'ledgertail-producer';
import { appendLines, payloadOf } from 'ledgertail-producer/pino';

import { run, tempDir } from './helpers.mjs';

function events (ledger) {
  return readFileSync(ledger, 'utf8').split('\n').filter((l) => l).map(strictParse);
}

/** A pino logger writing through the transport; `end` resolves once it has flushed and closed. */
function logger (options, bindings = {}) {
  const transport = pino.transport({ target: 'ledgertail-producer/pino', options });
  const log = pino(bindings, transport);
  // pino's worker does not hold the event loop open: this does, until
  // the transport has closed.
  const alive = setInterval(() => {}, 1000);
  const closed = new Promise((resolve) => transport.on('close', () => { clearInterval(alive); resolve(); }));
  return { log, end: () => { transport.end(); return closed; } };
}

test('each pino log line becomes a sealed event that ledgertail verify accepts', async () => {
  const dir = tempDir();
  const ledger = join(dir, 'app.jsonl');
  const { log, end } = logger({ path: ledger, typeField: 'kind' }, { name: 'orders' });
  log.info({ order: 42, kind: 'order.refunded' }, 'refund issued');
  log.warn({ big: 2 ** 60 }, 'odd numbers');
  log.error(new Error('disk full'), 'write failed');
  await end();
  const got = events(ledger);
  assert.deepEqual(got.map((e) => e.seq), [0, 1, 2]);
  assert.deepEqual(got.map((e) => e.type), ['order.refunded', 'orders', 'orders']);
  assert.equal(got[0].payload.msg, 'refund issued');
  assert.equal(got[0].payload.level, 30);
  assert.equal(got[0].payload.order, 42);
  assert.equal(typeof got[0].payload.time, 'number');
  assert.equal(got[1].payload.big, 2 ** 60); // written as its double: sealed as a number
  assert.match(got[2].payload.err.stack, /disk full/);
  const out = run('verify', '--ledger', ledger);
  assert.equal(out.code, 0, out.text);
  assert.match(out.text, /3 events in the chain/);
});

test('a line the ledger would not take as it is keeps its data', () => {
  assert.deepEqual(payloadOf('{"a":1,"a":2}'), { a: 2 });
  assert.deepEqual(payloadOf('{"n":12345678901234567890}'), { n: '12345678901234567000' });
  assert.deepEqual(payloadOf('not json'), { line: 'not json' });
});

test('a batch that cannot be appended is reported and the next lines go in', () => {
  const dir = tempDir();
  const ledger = join(dir, 'app.jsonl');
  writeFileSync(ledger, '{"unfinished"'); // another writer died mid-line
  const writer = new Writer(ledger);
  const said = [];
  const write = process.stderr.write;
  process.stderr.write = (text) => { said.push(String(text)); return true; };
  try {
    appendLines(writer, ['{"msg":"lost"}']);
  } finally {
    process.stderr.write = write;
  }
  assert.match(said.join(''), /1 log line\(s\) were not sealed/);
  writeFileSync(ledger, '');
  appendLines(writer, ['{"msg":"kept","kind":"a"}', '{"msg":"also","kind":"b"}'], { typeField: 'kind' });
  assert.deepEqual(events(ledger).map((e) => [e.payload.msg, e.type]), [['kept', 'a'], ['also', 'b']]);
});

test('a process that imports the library can end a transport and start another', () => {
  // fs-ext's addon aborted the process when a second worker loaded it
  // after a first one ended, once the importing thread had loaded it too.
  const dir = tempDir();
  const script = join(process.cwd(), 'tests', `pino-again-${process.pid}.mjs`);
  writeFileSync(script, `
import pino from 'pino';
import { Writer } from 'ledgertail-producer';
const alive = setInterval(() => {}, 1000);
for (const name of ['a', 'b']) {
  const transport = pino.transport({ target: 'ledgertail-producer/pino', options: { path: process.argv[2] } });
  pino(transport).info({ name }, 'hello');
  const closed = new Promise((resolve) => transport.on('close', resolve));
  transport.end();
  await closed;
}
clearInterval(alive);
console.log(Writer.name);
`);
  try {
    const ledger = join(dir, 'app.jsonl');
    const out = spawnSync(process.execPath, [script, ledger]);
    assert.equal(out.status, 0, out.stderr.toString());
    assert.deepEqual(events(ledger).map((e) => e.type), ['a', 'b']);
  } finally {
    rmSync(script, { force: true });
  }
});

const PER_PROCESS = 200;
// An app that logs and exits as any app does: pino flushes its
// transport at exit.
const CHILD = `
import pino from 'pino';
const [ledger, name, n] = process.argv.slice(2);
const log = pino(pino.transport({ target: 'ledgertail-producer/pino', options: { path: ledger } }));
for (let i = 0; i < Number(n); i++) log.info({ writer: name, n: i }, 'step');
`;

test('pino in several processes logs into one chain, each line once and in order', async () => {
  const dir = tempDir();
  const ledger = join(dir, 'shared.jsonl');
  const script = join(process.cwd(), 'tests', `pino-child-${process.pid}.mjs`);
  writeFileSync(script, CHILD);
  try {
    const children = [0, 1, 2, 3].map((k) => new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [script, ledger, `p${k}`, String(PER_PROCESS)], { stdio: 'inherit' });
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child ${k} exited ${code}`))));
    }));
    await Promise.all(children);
  } finally {
    rmSync(script, { force: true });
  }
  const out = run('verify', '--ledger', ledger);
  assert.equal(out.code, 0, out.text);
  assert.match(out.text, new RegExp(`${4 * PER_PROCESS} events in the chain`));
  const seen = {};
  for (const e of events(ledger)) (seen[e.payload.writer] ??= []).push(e.payload.n);
  assert.equal(Object.keys(seen).length, 4);
  for (const [name, ns] of Object.entries(seen)) {
    assert.deepEqual(ns, [...Array(PER_PROCESS).keys()], `${name}'s lines out of order or repeated`);
  }
});
