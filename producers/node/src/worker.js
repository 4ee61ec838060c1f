// The worker thread behind Writer.append and appendBatch (see
// offthread.js): one Writer per ledger and settings, kept so that the head
// it wrote last is known without reading the file again.

import { createPublicKey } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

import { APPEND_DRAFTS } from './offthread.js';
import { Writer } from './writer.js';

const writers = new Map();

function writerFor ({ path, key, maxLineBytes, fsync }) {
  const publicKey = key ? createPublicKey(key.privateKey).export({ format: 'der', type: 'spki' }).toString('base64') : null;
  const id = JSON.stringify([path, key?.keyId ?? null, publicKey, maxLineBytes, fsync]);
  let writer = writers.get(id);
  if (!writer) {
    writer = new Writer(path, { key, maxLineBytes, fsync });
    writers.set(id, writer);
  }
  return writer;
}

/** An error as plain data: its class name, message, hint and fields. */
function flatten (e) {
  const out = { name: e?.name ?? 'Error', message: String(e?.message ?? e), stack: e?.stack };
  for (const field of ['hint', 'index', 'appended', 'path', 'unfinished', 'code', 'errno', 'syscall']) {
    if (e && e[field] !== undefined) out[field] = e[field];
  }
  return out;
}

parentPort.on('message', ({ id, settings, drafts, single }) => {
  try {
    parentPort.postMessage({ id, result: writerFor(settings)[APPEND_DRAFTS](drafts, single) });
  } catch (e) {
    parentPort.postMessage({ id, error: flatten(e) });
  }
});
