// Finding a ledger's head as `ledgertail append` does (contract §4): the
// last well-formed event with a correct hash, read *back* from the end of
// the live file (never the whole ledger), or, when the live file holds
// none, of the newest rotated file (the regular files beside it named
// `<name>.<anything>`, ordered by the seq of their first event; compressed
// ones are never read).

import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

import { HeadCompressedError, UnfinishedLineError } from './errors.js';
import { judgeLine } from './seal.js';

const BLOCK = 64 * 1024;
const COMPRESSED = /\.(gz|bz2|xz|zst|lz4|zip)$/i;

function pread (fd, length, position) {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) throw new Error(`short read at offset ${position + got}: the file shrank`);
    got += n;
  }
  return buf;
}

/** The complete lines of the first `length` bytes (ending in LF), last first; a line over `limit` comes as null. */
function * linesBackward (fd, length, limit) {
  if (length === 0) return;
  let cursor = length - 1; // the final LF; bytes before it unread
  let parts = [];
  let kept = 0;
  let tooLong = false;
  while (cursor > 0) {
    const lo = Math.max(0, cursor - BLOCK);
    const block = pread(fd, cursor - lo, lo);
    let j = block.length;
    for (;;) {
      const i = j > 0 ? block.lastIndexOf(0x0a, j - 1) : -1;
      const piece = block.subarray(i + 1, j);
      if (!tooLong) {
        parts.push(piece);
        kept += piece.length;
        tooLong = kept > limit;
      }
      if (i < 0) break;
      yield tooLong ? null : Buffer.concat(parts.reverse());
      parts = [];
      kept = 0;
      tooLong = false;
      j = i;
    }
    cursor = lo;
  }
  yield tooLong ? null : Buffer.concat(parts.reverse());
}

export function unfinishedBytes (fd, length) {
  let end = length;
  while (end > 0) {
    const lo = Math.max(0, end - BLOCK);
    const i = pread(fd, end - lo, lo).lastIndexOf(0x0a);
    if (i >= 0) return length - (lo + i + 1);
    end = lo;
  }
  return length;
}

export function lastEvent (fd, length, limit) {
  for (const line of linesBackward(fd, length, limit)) {
    if (line !== null) {
      const head = judgeLine(line);
      if (head) return head;
    }
  }
  return null;
}

/** The first event of a file, read forward (a rotated file's order). */
function firstEvent (fd, limit) {
  let offset = 0;
  let pending = Buffer.alloc(0);
  let skipping = false;
  for (;;) {
    const block = Buffer.alloc(BLOCK);
    const n = readSync(fd, block, 0, BLOCK, offset);
    if (n === 0) return null;
    offset += n;
    pending = Buffer.concat([pending, block.subarray(0, n)]);
    for (;;) {
      const i = pending.indexOf(0x0a);
      if (i < 0) {
        if (pending.length > limit) {
          pending = Buffer.alloc(0);
          skipping = true; // a long line: drop it up to its LF
        }
        break;
      }
      const line = pending.subarray(0, i);
      pending = pending.subarray(i + 1);
      if (skipping) {
        skipping = false;
        continue;
      }
      if (line.length <= limit) {
        const head = judgeLine(line);
        if (head) return head;
      }
    }
  }
}

function siblings (path) {
  const folder = dirname(path);
  const name = basename(path);
  const rotated = [];
  const compressed = [];
  let names;
  try {
    names = readdirSync(folder);
  } catch (e) {
    if (e.code === 'ENOENT') return { rotated, compressed };
    throw e;
  }
  for (const other of names) {
    if (!other.startsWith(name + '.')) continue;
    const full = join(folder, other);
    let st;
    try {
      st = lstatSync(full);
    } catch {
      continue;
    }
    if (!st.isFile()) continue;
    if (COMPRESSED.test(other)) compressed.push([full, st.mtimeMs]);
    else rotated.push(full);
  }
  return { rotated, compressed };
}

function withFile (path, fn) {
  let fd;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null; // rotated away meanwhile, or unreadable
  }
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** The head of the ledger whose live file `path` is open (and locked) as `fd` with `length` bytes. */
export function findHead (path, fd, length, limit) {
  if (length > 0 && pread(fd, 1, length - 1)[0] !== 0x0a) {
    throw new UnfinishedLineError(path, unfinishedBytes(fd, length));
  }
  const head = lastEvent(fd, length, limit);
  if (head) return head;
  const { rotated, compressed } = siblings(path);
  const ordered = [];
  for (const other of rotated) {
    const first = withFile(other, (rfd) => firstEvent(rfd, limit));
    if (first) ordered.push([first.seq, other]);
  }
  ordered.sort((a, b) => b[0] - a[0]);
  for (const [, other] of ordered) {
    const found = withFile(other, (rfd) => {
      const size = fstatSync(rfd).size;
      return lastEvent(rfd, size - unfinishedBytes(rfd, size), limit);
    });
    if (found) return found;
  }
  if (compressed.length) {
    const newest = compressed.reduce((a, b) => (b[1] > a[1] ? b : a))[0];
    throw new HeadCompressedError(`${path}: the live file holds no event and no uncompressed rotated file does, but ${newest} is compressed: the head may be in it, and a new chain here would reuse its seqs`);
  }
  return null;
}
