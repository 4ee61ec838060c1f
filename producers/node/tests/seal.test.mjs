// The sealed line is the RFC 8785 form of the whole event, its hash is
// SHA-256 of the form without hash and sig, the signature verifies, and
// the line judges as an event; lines that are not events are not heads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify } from 'node:crypto';
import canonicalize from 'canonicalize';

import { KeyFile } from '../src/index.js';
import { draft, judgeLine, kind, seal } from '../src/seal.js';

const KEY = KeyFile.generate('k\u00e9y');
const TS = '2026-12-03T06:00:00.123456Z';

test('every shape of event is its own canonical form', () => {
  const shapes = [
    draft(kind('t'), { b: 1, a: [1e-7] }),
    draft(kind('t'), null, 'order-1'),
    draft(kind('t\u2028', { zz: 1, '\u{1f600}': 2, '\ufb01': [3], a: null }), 'x'),
    draft(kind('t', { ext: { n: 1 } }), 1, 'id')
  ];
  for (const d of shapes) {
    for (const signer of [null, { keyId: KEY.keyId, privateKey: KEY.privateKey }]) {
      for (const [seq, prev] of [[0, null], [7, 'ab'.repeat(32)]]) {
        const { line, hash } = seal(d, seq, prev, TS, signer);
        const text = line.toString('utf8');
        assert.ok(text.endsWith('\n') && text.indexOf('\n') === text.length - 1);
        const event = JSON.parse(text);
        assert.equal(canonicalize(event) + '\n', text);
        const body = Object.fromEntries(Object.entries(event).filter(([k]) => k !== 'hash' && k !== 'sig'));
        assert.equal(createHash('sha256').update(canonicalize(body)).digest('hex'), hash);
        assert.equal(event.hash, hash);
        if (signer) {
          assert.equal(event.key_id, KEY.keyId);
          assert.ok(verify(null, Buffer.from(hash, 'hex'), createPublicKey(KEY.privateKey), Buffer.from(event.sig, 'base64')));
        }
        assert.deepEqual(judgeLine(line.subarray(0, -1)), { seq, hash });
      }
    }
  }
});

test('lines that are not events are not heads', () => {
  const { line } = seal(draft(kind('t'), 1), 0, null, TS);
  const good = line.subarray(0, -1).toString();
  assert.ok(judgeLine(Buffer.from(good)));
  for (const bad of ['\ufeff' + good, good.replace('"payload":1', '"payload":2'), good.slice(0, -1) + ',"seq":0}',
    good.replace('"seq":0', '"seq":-0'), good.replace('"seq":0', '"seq":0.0'), good.replace(TS, 'yesterday'), '[1]', '']) {
    assert.equal(judgeLine(Buffer.from(bad)), null, bad);
  }
  assert.equal(judgeLine(Buffer.from([0xff])), null);
});
