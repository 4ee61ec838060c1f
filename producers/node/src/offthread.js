// The Promise-returning appends: the blocking part of an append (flock,
// which may wait for another writer; write; fdatasync) runs on one worker
// thread per process, so the event loop never waits for a disk or a lock.
// Calls run in the order they were made. Payloads are checked and made
// canonical on the caller's thread first, so a PayloadError is thrown
// where the bad value is; only strings and the key cross to the worker.

import { Worker } from 'node:worker_threads';

import * as errors from './errors.js';

/** The Writer method the worker calls with checked drafts. */
export const APPEND_DRAFTS = Symbol('ledgertail appendDrafts');

let worker = null;
let nextId = 1;
const pending = new Map();

function revive (e) {
  const Class = errors[e.name];
  const error = Object.create((typeof Class === 'function' ? Class : Error).prototype);
  Object.assign(error, e);
  return error;
}

function theWorker () {
  if (worker) return worker;
  const w = new Worker(new URL('./worker.js', import.meta.url));
  w.on('message', ({ id, result, error }) => {
    const call = pending.get(id);
    pending.delete(id);
    // An idle worker does not keep the process alive.
    if (pending.size === 0) w.unref();
    if (error) call.reject(revive(error));
    else call.resolve(result);
  });
  w.on('error', (e) => {
    for (const call of pending.values()) call.reject(e);
    pending.clear();
    worker = null;
  });
  w.on('exit', () => {
    if (worker === w) worker = null;
  });
  worker = w;
  return w;
}

/** Appends `drafts` with a writer made from `settings` on the worker. */
export function appendOffThread (settings, drafts, single) {
  const w = theWorker();
  w.ref();
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    w.postMessage({ id, settings, drafts, single });
  });
}
