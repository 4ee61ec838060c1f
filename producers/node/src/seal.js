// Sealing an event and judging a line, as contract §1 says: the event hash
// is SHA-256 over the RFC 8785 canonical form of the event without `hash`
// and `sig` (the `canonicalize` package writes it), the signature Ed25519
// over the hash's 32 bytes (node:crypto), and a line is an event only when
// the sidecar would find it well formed with a correct hash (the
// `@humanwhocodes/momoa` parser shows repeated names and number literals,
// which JSON.parse hides). Pure: no file is touched here.

import { createHash, sign as edSign } from 'node:crypto';
import canonicalize from 'canonicalize';
import { parse as parseAst } from '@humanwhocodes/momoa';

import { PayloadError } from './errors.js';

export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER;
/** The sidecar's nesting limit for a whole line (the event is one level). */
export const MAX_LINE_DEPTH = 128;
export const DEFAULT_MAX_LINE_BYTES = 1048576;
export const RESERVED = new Set(['seq', 'ts', 'type', 'payload', 'prev_hash', 'hash', 'id', 'key_id', 'sig']);

const HEX64 = /^[0-9a-f]{64}$/;
const encoder = new TextEncoder();

function typeName (v) {
  if (v === null) return 'null';
  if (typeof v !== 'object') return typeof v;
  return v.constructor?.name ?? 'an object without prototype';
}

/**
 * Refuses what JSON has no value for, or the sidecar would refuse, with
 * where it is: NaN and Infinity, BigInt (exact integers a double cannot
 * hold), undefined, functions, symbols, objects
 * that are not plain (Date, Map, Set, class instances), lone surrogates,
 * nesting deeper than the sidecar reads. Walked without recursion.
 */
const HINT_NOT_FINITE = 'JSON has no NaN or Infinity: write null, or the value as a string';
const HINT_BIG_INTEGER = 'write integers beyond ±(2^53−1) as strings';

/** What to do with a value that is an object but not a JSON one. */
function hintFor (v) {
  if (v instanceof Date) return 'write the date as a string: date.toISOString()';
  if (v instanceof Map) return 'write the map as an object: Object.fromEntries(map)';
  if (v instanceof Set) return 'write the set as an array: [...set]';
  if (ArrayBuffer.isView(v)) return "write bytes as a string: Buffer.from(bytes).toString('base64')";
  return 'convert it to plain objects and arrays first (JSON.parse(JSON.stringify(value)) shows what JSON keeps)';
}

function check (value, where) {
  const limit = MAX_LINE_DEPTH - 1;
  const stack = [[value, where, 0]];
  while (stack.length) {
    const [v, at, depth] = stack.pop();
    switch (typeof v) {
      case 'string':
        if (hasLoneSurrogate(v)) throw new PayloadError(`${at} holds a lone surrogate: not UTF-8`);
        continue;
      case 'boolean':
        continue;
      case 'number':
        // A Number is a double, written as RFC 8785 writes it, which the
        // sidecar reads back to the same double (2 ** 60 included); only
        // BigInt, JavaScript's exact integers, cannot be kept.
        if (!Number.isFinite(v)) throw new PayloadError(`${at} is ${v}: JSON has no NaN or Infinity`, undefined, HINT_NOT_FINITE);
        continue;
      case 'bigint':
        throw new PayloadError(`${at} is a BigInt (${v}n): JSON numbers are doubles; write it as a string`, undefined, HINT_BIG_INTEGER);
      case 'object': {
        if (v === null) continue;
        const array = Array.isArray(v);
        const proto = Object.getPrototypeOf(v);
        if (!array && proto !== Object.prototype && proto !== null) {
          throw new PayloadError(`${at} is ${typeName(v)}, not a JSON value (plain objects and arrays only)`, undefined, hintFor(v));
        }
        if (depth + 1 > limit) {
          throw new PayloadError(`${at} nests objects and arrays deeper than ${limit} levels (the sidecar reads lines up to ${MAX_LINE_DEPTH})`);
        }
        if (array) {
          for (let i = 0; i < v.length; i++) stack.push([v[i], `${at}[${i}]`, depth + 1]);
        } else {
          for (const key of Object.keys(v)) {
            if (hasLoneSurrogate(key)) throw new PayloadError(`${at} has a member name with a lone surrogate`);
            stack.push([v[key], `${at}.${key}`, depth + 1]);
          }
          if (Object.getOwnPropertySymbols(v).length) throw new PayloadError(`${at} has symbol keys, which JSON has not`);
        }
        continue;
      }
      default:
        throw new PayloadError(`${at} is ${typeof v === 'undefined' ? 'undefined' : `a ${typeof v}`}, not a JSON value`);
    }
  }
}

function hasLoneSurrogate (s) {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const n = s.charCodeAt(i + 1);
      if (!(n >= 0xdc00 && n <= 0xdfff)) return true;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return true;
    }
  }
  return false;
}

/** The RFC 8785 canonical text of `value`, or PayloadError saying why not. */
export function canonical (value, where = 'payload') {
  check(value, where);
  try {
    return canonicalize(value);
  } catch (e) {
    throw new PayloadError(`${where} is not JSON: ${e.message}`);
  }
}

function validText (value, what, most) {
  if (typeof value !== 'string') throw new PayloadError(`${what} must be a string, not ${typeName(value)}`);
  if (hasLoneSurrogate(value)) throw new PayloadError(`${what} holds a lone surrogate`);
  const n = Buffer.byteLength(value, 'utf8');
  if (n < 1 || n > most) throw new PayloadError(`${what} must be 1 to ${most} bytes, not ${n}`);
  return value;
}

/** 1 to 128 bytes with no control character (as `ledgertail keygen`). */
export function validKeyId (keyId) {
  try {
    validText(keyId, 'key_id', 128);
  } catch {
    return false;
  }
  return !/[\u0000-\u001f\u007f-\u009f]/.test(keyId);
}

/** What the events of one call share, checked and canonicalized once. */
export function kind (type, extensions) {
  validText(type, 'type', 256);
  const ext = [];
  for (const [name, value] of Object.entries(extensions ?? {})) {
    if (RESERVED.has(name)) throw new PayloadError(`extension "${name}" is a member of every event; pick another name`);
    canonical(name, "an extension's name");
    ext.push([name, canonical(value, `extension "${name}"`)]);
  }
  return { typeJson: canonical(type, 'type'), extensions: ext };
}

/** Checks everything about an event that does not depend on the head. */
export function draft (shared, payload, id) {
  if (id !== undefined && id !== null) validText(id, 'id', 256);
  return {
    typeJson: shared.typeJson,
    payloadJson: canonical(payload),
    idJson: id === undefined || id === null ? null : canonicalize(id),
    extensions: shared.extensions
  };
}

// Member names compare by UTF-16 code units (RFC 8785 §3.2.3), which is
// how JavaScript compares strings.
function object (members) {
  members.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return `{${members.map(([name, value]) => `${canonicalize(name)}:${value}`).join(',')}}`;
}

/**
 * The event's line (canonical, with its LF, as bytes) and its hash.
 * `signer` is {keyId, privateKey} (a node:crypto Ed25519 KeyObject).
 */
export function seal (d, seq, prevHash, ts, signer) {
  const members = [
    ['seq', String(seq)],
    ['ts', `"${ts}"`],
    ['type', d.typeJson],
    ['payload', d.payloadJson],
    ['prev_hash', prevHash === null ? 'null' : `"${prevHash}"`]
  ];
  if (d.idJson !== null) members.push(['id', d.idJson]);
  if (signer) members.push(['key_id', canonicalize(signer.keyId)]);
  members.push(...d.extensions);
  const digest = createHash('sha256').update(object([...members])).digest();
  const hash = digest.toString('hex');
  members.push(['hash', `"${hash}"`]);
  if (signer) members.push(['sig', `"${edSign(null, digest, signer.privateKey).toString('base64')}"`]);
  return { line: Buffer.from(object(members) + '\n', 'utf8'), hash };
}

// Judging lines (finding the head) ---------------------------------------

const TS = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$/;

export function isRfc3339 (ts) {
  const m = TS.exec(ts);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  if (month < 1 || month > 12 || hour > 23 || minute > 59 || second > 60) return false;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  if (day < 1 || day > days) return false;
  if (m[9] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return false;
  return true;
}

class NotJson extends Error {}

/**
 * JSON text read as the contract reads it: a repeated member name, NaN or
 * Infinity, a number that overflows, an integer literal beyond 2^53−1 not
 * spelled as its double, nesting deeper than the sidecar reads: refused.
 * Returns the value, and the literal of each top-level number by member.
 */
function strictValue (text) {
  let ast;
  try {
    ast = parseAst(text, { ranges: true });
  } catch (e) {
    throw new NotJson(e.message);
  }
  const literals = new Map();
  const build = (node, depth, top) => {
    if (depth > MAX_LINE_DEPTH) throw new NotJson(`nesting deeper than ${MAX_LINE_DEPTH} levels`);
    switch (node.type) {
      case 'Object': {
        // No prototype: a member named __proto__ stays an ordinary member
        // (on a plain object, assigning it would replace the prototype).
        const out = Object.create(null);
        const seen = new Set();
        for (const m of node.members) {
          const name = m.name.value;
          if (seen.has(name)) throw new NotJson(`the member name ${JSON.stringify(name)} is repeated`);
          seen.add(name);
          const value = build(m.value, depth + 1, false);
          if (top && m.value.type === 'Number') literals.set(name, text.slice(m.value.range[0], m.value.range[1]));
          Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
        }
        return out;
      }
      case 'Array':
        return node.elements.map((e) => build(e.value, depth + 1, false));
      case 'Number': {
        const raw = text.slice(node.range[0], node.range[1]);
        const v = node.value;
        if (!Number.isFinite(v)) throw new NotJson(`the number ${raw} is out of range`);
        if (/^-?\d+$/.test(raw) && Math.abs(v) > MAX_SAFE_INTEGER && JSON.stringify(v) !== raw) {
          throw new NotJson(`the integer ${raw} is beyond ±(2^53−1) and not spelled as its double`);
        }
        return v;
      }
      case 'String':
        if (hasLoneSurrogate(node.value)) throw new NotJson('a lone surrogate');
        return node.value;
      case 'Boolean':
        return node.value;
      case 'Null':
        return null;
      default:
        throw new NotJson(`unexpected ${node.type}`);
    }
  };
  try {
    return { value: build(ast.body, 1, true), literals };
  } catch (e) {
    if (e instanceof RangeError) throw new NotJson('nesting too deep');
    throw e;
  }
}

/** Payload JSON text, parsed strictly (see strictValue); PayloadError when refused. */
export function strictParse (text) {
  try {
    return strictValue(text).value;
  } catch (e) {
    if (e instanceof NotJson) {
      throw new PayloadError(`not acceptable JSON: ${e.message}`, undefined, e.message.includes('2^53') ? HINT_BIG_INTEGER : undefined);
    }
    throw e;
  }
}

function isText (v, most) {
  return typeof v === 'string' && !hasLoneSurrogate(v) && v.length > 0 && Buffer.byteLength(v, 'utf8') <= most;
}

function isSignature (sig) {
  if (typeof sig !== 'string') return false;
  const raw = Buffer.from(sig, 'base64');
  return raw.length === 64 && raw.toString('base64') === sig;
}

/**
 * The event a line (bytes, without its LF) holds when the sidecar would
 * find it well formed with a correct hash (signatures are not checked):
 * {seq, hash}, else null.
 */
export function judgeLine (bytes) {
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return null;
  }
  if (text.startsWith('\ufeff') || !text.trim()) return null;
  let event, literals;
  try {
    ({ value: event, literals } = strictValue(text));
  } catch (e) {
    if (e instanceof NotJson) return null;
    throw e;
  }
  if (event === null || typeof event !== 'object' || Array.isArray(event)) return null;
  const seq = event.seq;
  if (!Number.isSafeInteger(seq) || !/^\d+$/.test(literals.get('seq') ?? '')) return null;
  if (!('payload' in event) || !isText(event.type, 256)) return null;
  if (typeof event.ts !== 'string' || !isRfc3339(event.ts)) return null;
  const prev = 'prev_hash' in event ? event.prev_hash : 0;
  if ((seq === 0) !== (prev === null)) return null;
  if (prev !== null && !(typeof prev === 'string' && HEX64.test(prev))) return null;
  if (typeof event.hash !== 'string' || !HEX64.test(event.hash)) return null;
  if ('id' in event && !isText(event.id, 256)) return null;
  if ('key_id' in event && !isText(event.key_id, 128)) return null;
  if ('sig' in event && (!('key_id' in event) || !isSignature(event.sig))) return null;
  const body = Object.create(null); // see strictValue: __proto__ is a member
  for (const [k, v] of Object.entries(event)) if (k !== 'hash' && k !== 'sig') body[k] = v;
  let canon;
  try {
    canon = canonicalize(body);
  } catch {
    return null;
  }
  const digest = createHash('sha256').update(encoder.encode(canon)).digest('hex');
  return digest === event.hash ? { seq, hash: event.hash } : null;
}
