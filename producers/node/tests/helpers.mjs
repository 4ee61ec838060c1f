// What the tests share: the ledgertail binary (LEDGERTAIL_BIN, else this
// repository's build), the repository's copy of the contract's vectors,
// and helpers that run `ledgertail` on a ledger.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const VECTORS = join(REPO, 'tests/data/vectors');

export function ledgertail () {
  if (process.env.LEDGERTAIL_BIN) return process.env.LEDGERTAIL_BIN;
  for (const profile of ['debug', 'release']) {
    const p = join(REPO, 'target', profile, 'ledgertail');
    if (existsSync(p)) return p;
  }
  throw new Error('no ledgertail binary: set LEDGERTAIL_BIN or run cargo build');
}

export function run (...args) {
  let input;
  if (args.length && typeof args.at(-1) === 'object') input = args.pop().input;
  const out = spawnSync(ledgertail(), args, { input, timeout: 600_000 });
  return { code: out.status, text: out.stdout.toString() + out.stderr.toString(), stdout: out.stdout.toString() };
}

export function tempDir () {
  return mkdtempSync(join(tmpdir(), 'lt-node-'));
}

/** A config with one ledger, signatures required from `keys`. */
export function trustingConfig (folder, ledger, keys, db) {
  const lines = [`db = "${db}"`, '[keys]'];
  for (const [k, v] of Object.entries(keys)) lines.push(`${JSON.stringify(k)} = "${v}"`);
  lines.push('[[ledger]]', 'name = "app"', `path = "${ledger}"`, 'signatures = "required"');
  const config = join(folder, 'ledgertail.toml');
  writeFileSync(config, lines.join('\n') + '\n');
  return config;
}

/** The mirror's payloads in seq order, read with python3's sqlite3 (Node 20 has no SQLite of its own). */
export function mirroredPayloads (db) {
  const out = spawnSync('python3', ['-c', 'import sqlite3,sys,json; c=sqlite3.connect(sys.argv[1]); print(json.dumps([r[0] for r in c.execute("SELECT payload FROM events ORDER BY seq")]))', db]);
  if (out.status !== 0) throw new Error(out.stderr.toString());
  return JSON.parse(out.stdout.toString());
}
