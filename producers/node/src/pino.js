// A pino transport that seals each log line into a ledgertail ledger:
//
//   import pino from 'pino';
//   const log = pino(pino.transport({ target: 'ledgertail-producer/pino', options: { path: 'audit.jsonl' } }));
//   log.info({ order: 42 }, 'refund issued');
//
// pino runs a transport on a worker thread of its own, so the appends
// (the lock, the write, the fsync) never block the app's event loop; the
// lines waiting when the worker gets to them go in as one batch (one
// lock, one fsync). The rules are the Writer's: the lock shared with
// every other writer, fsync before a batch counts as written unless
// `fsync: false`, nothing half-written. A log line is never lost for its
// data: a repeated member keeps its last value (as JSON.parse does), and
// a number JSON cannot seal is written as its text. A batch that cannot
// be appended (a full disk, an unfinished line left by a writer that
// died) is reported on stderr, and the next lines are tried again.

import build from 'pino-abstract-transport';

import { KeyFile } from './keyfile.js';
import { MAX_SAFE_INTEGER, strictParse } from './seal.js';
import { Writer } from './writer.js';

/** Lines appended under one lock at most. */
const MAX_BATCH = 1000;

/**
 * The transport (pino calls it with `options`).
 * @param {{path: string, keyFile?: string, type?: string, typeField?: string, fsync?: boolean, maxLineBytes?: number}} options
 */
export default async function ledgertailTransport (options = {}) {
  const { path, keyFile, type, typeField, fsync = true, maxLineBytes } = options;
  if (typeof path !== 'string' || path === '') {
    throw new TypeError("ledgertail-producer/pino: options.path names the ledger's live file");
  }
  const key = keyFile ? KeyFile.load(keyFile) : undefined;
  const writer = new Writer(path, { key, fsync, ...(maxLineBytes ? { maxLineBytes } : {}) });
  return build(async function (source) {
    for await (const first of source) {
      const lines = [first];
      let more;
      while (lines.length < MAX_BATCH && (more = source.read()) !== null) lines.push(more);
      appendLines(writer, lines, { type, typeField });
    }
  }, { parse: 'lines' });
}

/**
 * Appends log lines as events, consecutive lines of one type in one
 * batch; what fails is reported, never thrown (a log call must not fail).
 */
export function appendLines (writer, lines, { type, typeField } = {}) {
  const payloads = lines.filter((l) => l.trim() !== '').map(payloadOf);
  let at = 0;
  while (at < payloads.length) {
    const kind = typeOf(payloads[at], type, typeField);
    let end = at + 1;
    while (end < payloads.length && typeOf(payloads[end], type, typeField) === kind) end++;
    try {
      writer.appendBatchSync(kind, payloads.slice(at, end));
    } catch (e) {
      const hint = e && e.hint ? ` (hint: ${e.hint})` : '';
      process.stderr.write(`ledgertail-producer/pino: ${end - at} log line(s) were not sealed into ${writer.path}: ${e && e.message}${hint}\n`);
    }
    at = end;
  }
}

/** A log line as a payload the ledger takes (see the module's text). */
export function payloadOf (line) {
  try {
    return strictParse(line);
  } catch {
    // Not as the ledger reads JSON (a repeated member, a number beyond
    // what it seals): as JSON.parse reads it, numbers made sealable.
  }
  try {
    return sealable(JSON.parse(line));
  } catch {
    return { line };
  }
}

function sealable (value) {
  if (typeof value === 'number') {
    const exact = Number.isInteger(value) ? Math.abs(value) <= MAX_SAFE_INTEGER : Number.isFinite(value);
    return exact ? value : String(value);
  }
  if (Array.isArray(value)) return value.map(sealable);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, sealable(v)]));
  }
  return value;
}

/** The member `typeField` names when it holds a string, else `type`, else pino's `name`, else "log". */
function typeOf (payload, type, typeField) {
  const ok = (v) => typeof v === 'string' && v.length > 0 && Buffer.byteLength(v, 'utf8') <= 256;
  if (typeField !== undefined && payload && ok(payload[typeField])) return payload[typeField];
  if (ok(type)) return type;
  if (payload && ok(payload.name)) return payload.name;
  return 'log';
}
