"""The sealed line is the RFC 8785 form of the whole event (written
straight for the usual members, sorted generically with extensions), its
hash is SHA-256 of the form without hash and sig, and the line judges as
an event."""

from __future__ import annotations

import base64
import hashlib
import json

import rfc8785

from ledgertail_producer import KeyFile
from ledgertail_producer._seal import draft, judge_line, seal

KEY = KeyFile.generate("k\u00e9y")
TS = "2026-12-03T06:00:00.123456Z"


def test_every_shape_of_event_is_its_own_canonical_form():
    shapes = [
        draft("t", {"b": 1, "a": [1e-7]}),
        draft("t", None, "order-1"),
        draft("t\u2028", "x", None, {"zz": 1, "\U0001f600": 2, "\ufb01": [3], "a": None}),
        draft("t", 1, "id", {"ext": {"n": 1}}),
    ]
    for d in shapes:
        for signer in (None, (KEY.key_id, KEY.private_key)):
            for seq, prev in ((0, None), (7, "ab" * 32)):
                line, digest = seal(d, seq, prev, TS, signer)
                assert line.endswith(b"\n") and line.count(b"\n") == 1
                event = json.loads(line)
                assert rfc8785.dumps(event) + b"\n" == line
                body = {k: v for k, v in event.items() if k not in ("hash", "sig")}
                assert hashlib.sha256(rfc8785.dumps(body)).hexdigest() == digest == event["hash"]
                if signer:
                    assert event["key_id"] == KEY.key_id
                    KEY.private_key.public_key().verify(
                        base64.b64decode(event["sig"]), bytes.fromhex(digest)
                    )
                assert judge_line(line.rstrip(b"\n")) == (seq, digest)


def test_lines_that_are_not_events_are_not_heads():
    line, _ = seal(draft("t", 1), 0, None, TS)
    good = line.rstrip(b"\n")
    assert judge_line(good) is not None
    assert judge_line(b"\xef\xbb\xbf" + good) is None  # a byte-order mark
    assert judge_line(good.replace(b'"payload":1', b'"payload":2')) is None  # hash
    assert judge_line(good[:-1] + b',"seq":0}') is None  # a repeated member
    assert judge_line(good.replace(b'"seq":0', b'"seq":-0')) is None
    assert judge_line(good.replace(b'"seq":0', b'"seq":0.0')) is None
    assert judge_line(good.replace(TS.encode(), b"yesterday")) is None
    assert judge_line(b"[1]") is None and judge_line(b"") is None and judge_line(b"\xff") is None
