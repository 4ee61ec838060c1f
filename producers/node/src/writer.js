// The writer: seals events and appends them to a ledger under the same
// exclusive lock as every other writer. Node has no flock(2); fs-ext binds
// it (a small native addon). A lock file, or fcntl/lockf record locks,
// would not exclude `ledgertail append`, the Rust Writer or the Python
// library, which all take flock(2) on the live file itself. One write per
// line, fsync before an append returns.

import { closeSync, constants, fdatasyncSync, fstatSync, ftruncateSync, openSync, statSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';

import { LedgerFullError, PayloadError, WriteError } from './errors.js';
import { findHead } from './head.js';
import { APPEND_DRAFTS, appendOffThread } from './offthread.js';
import { DEFAULT_MAX_LINE_BYTES, MAX_SAFE_INTEGER, draft, kind, seal } from './seal.js';

// Loaded at the first lock a thread takes, not at import: fs-ext's addon
// cannot be loaded again in a process after a worker thread that loaded it
// has ended (the process aborts), so a thread that only imports this
// module (an app whose appends all run off its thread, or beside a pino
// transport) never loads it.
let flock = null;
function flockSync (fd, how) {
  flock ??= createRequire(import.meta.url)('fs-ext').flockSync;
  return flock(fd, how);
}

function now () {
  // RFC 3339 in UTC with microseconds (JavaScript clocks give milliseconds).
  return new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export class Writer {
  #cached = null; // [dev, ino, size, head]: the head we wrote last

  /**
   * @param {string} path the ledger's live file (created if missing)
   * @param {{key?: import('./keyfile.js').KeyFile, maxLineBytes?: number, fsync?: boolean}} [options]
   */
  constructor (path, { key, maxLineBytes = DEFAULT_MAX_LINE_BYTES, fsync = true } = {}) {
    this.path = String(path);
    this.key = key ?? null;
    this.maxLineBytes = maxLineBytes;
    this.fsync = fsync;
  }

  /**
   * Seals `payload` (a JSON value) as the next event of type `type` and
   * appends it; resolves once it is on disk. The lock, the write and the
   * fsync run on a worker thread: the event loop is never blocked.
   */
  async append (type, payload, { id, extensions } = {}) {
    const drafts = this.#drafts(type, [payload], id === undefined ? undefined : [id], extensions, true);
    return (await appendOffThread(this.#settings(), drafts, true))[0];
  }

  /** Several events under one lock and one fsync, off the event loop; all checked before any is written. */
  async appendBatch (type, payloads, { ids, extensions } = {}) {
    const drafts = this.#drafts(type, payloads, ids, extensions, false);
    return appendOffThread(this.#settings(), drafts, false);
  }

  /** `append`, blocking the calling thread until the event is on disk. */
  appendSync (type, payload, { id, extensions } = {}) {
    const drafts = this.#drafts(type, [payload], id === undefined ? undefined : [id], extensions, true);
    return this[APPEND_DRAFTS](drafts, true)[0];
  }

  /** `appendBatch`, blocking the calling thread. */
  appendBatchSync (type, payloads, { ids, extensions } = {}) {
    return this[APPEND_DRAFTS](this.#drafts(type, payloads, ids, extensions, false), false);
  }

  /** What the worker thread needs to make the same writer. */
  #settings () {
    return {
      path: this.path,
      key: this.key ? { keyId: this.key.keyId, privateKey: this.key.privateKey } : null,
      maxLineBytes: this.maxLineBytes,
      fsync: this.fsync
    };
  }

  /** Appends checked drafts (see `seal.draft`); used on the worker thread too. */
  [APPEND_DRAFTS] (drafts, single) {
    const appended = [];
    while (appended.length < drafts.length) this.#appendToLive(drafts.slice(appended.length), appended, single);
    return appended;
  }

  #drafts (type, payloads, ids, extensions, single) {
    if (!Array.isArray(payloads)) throw new PayloadError('payloads must be an array');
    if (ids !== undefined && ids.length !== payloads.length) {
      throw new PayloadError(`${ids.length} ids for ${payloads.length} payloads: give one id (or null) per payload`);
    }
    const shared = kind(type, extensions);
    const drafts = payloads.map((p, i) => {
      try {
        return draft(shared, p, ids?.[i]);
      } catch (e) {
        if (single || !(e instanceof PayloadError) || e.index !== undefined) throw e;
        throw new PayloadError(e.message.replace(/ \(hint: .*\)$/s, ''), i, e.hint);
      }
    });
    return drafts;
  }

  #openLocked () {
    for (;;) {
      const fd = openSync(this.path, constants.O_RDWR | constants.O_APPEND | constants.O_CREAT, 0o644);
      try {
        flockSync(fd, 'ex');
        const held = fstatSync(fd);
        const named = statSync(this.path);
        if (named.dev === held.dev && named.ino === held.ino) return { fd, st: held };
      } catch (e) {
        closeSync(fd);
        if (e.code === 'ENOENT') continue;
        throw e;
      }
      closeSync(fd); // rotated between open and lock: take the new file
    }
  }

  #stillLive (st) {
    try {
      const now = statSync(this.path);
      return now.dev === st.dev && now.ino === st.ino;
    } catch {
      return false;
    }
  }

  #appendToLive (drafts, appended, single) {
    const { fd, st } = this.#openLocked();
    try {
      let length = st.size;
      const c = this.#cached;
      let head = c && c[0] === st.dev && c[1] === st.ino && c[2] === length ? c[3] : findHead(this.path, fd, length, this.maxLineBytes);
      this.#cached = null;
      const lines = this.#sealAll(drafts, head, appended.length, single);
      const before = appended.length;
      for (let i = 0; i < lines.length; i++) {
        if (i > 0 && !this.#stillLive(st)) break; // renamed under us: the rest goes to the new live file
        const { line, event } = lines[i];
        try {
          const n = writeSync(fd, line);
          if (n !== line.length) throw new Error(`only ${n} of ${line.length} bytes written`);
        } catch (e) {
          throw this.#cutBack(fd, length, appended, before, e);
        }
        length += line.length;
        head = event;
        appended.push(event);
      }
      if (this.fsync) {
        try {
          fdatasyncSync(fd);
        } catch (e) {
          throw new WriteError(`${this.path}: ${appended.length - before} event(s) were written (the file is ${length} bytes) but fsync failed, so they may not be durable: ${e.message}`, appended);
        }
      }
      if (head) this.#cached = [st.dev, st.ino, length, head];
    } finally {
      closeSync(fd); // releases the lock
    }
  }

  #sealAll (drafts, head, offset, single) {
    const signer = this.key ? { keyId: this.key.keyId, privateKey: this.key.privateKey } : null; // a KeyFile or its parts
    const out = [];
    for (let i = 0; i < drafts.length; i++) {
      const seq = head ? head.seq + 1 : 0;
      if (seq > MAX_SAFE_INTEGER) throw new LedgerFullError(`${this.path}: the head is at seq ${seq - 1}, the largest a ledger can hold`);
      const { line, hash } = seal(drafts[i], seq, head ? head.hash : null, now(), signer);
      if (line.length - 1 > this.maxLineBytes) {
        throw new PayloadError(`its line would be ${line.length - 1} bytes, over the sidecar's line limit of ${this.maxLineBytes} (max_line_bytes)`, single ? undefined : offset + i);
      }
      const event = { seq, hash };
      out.push({ line, event });
      head = event;
    }
    return out;
  }

  #cutBack (fd, length, appended, before, error) {
    const whole = appended.slice(before);
    const kept = whole.length
      ? `${whole.length} event(s) of this batch reached the file whole (seq ${whole[0].seq}..=${whole.at(-1).seq}), then`
      : 'no event of this batch reached the file:';
    let what;
    try {
      ftruncateSync(fd, length);
      fdatasyncSync(fd);
      what = `${kept} a line could not be written (${error.message}); its partial bytes were removed (the file ends at its last complete line, ${length} bytes)`;
    } catch (e) {
      what = `${kept} a line could not be written (${error.message}), and removing its partial bytes failed too (${e.message}): cut the file back to ${length} bytes (\`truncate -s ${length}\`) before appending again`;
    }
    return new WriteError(`${this.path}: ${what}`, appended);
  }
}
