#!/usr/bin/env python3
"""Append sealed events to a ledgertail ledger, using only the standard library.

    python3 examples/producer.py ledger.jsonl order.created < payloads.jsonl

One JSON payload per line on stdin. Each event is sealed (SHA-256 over its
RFC 8785 canonical form, hash and sig excluded), appended with one write
under an exclusive lock, and fsynced.

`canonical` below equals RFC 8785 for payloads made of strings, integers
within +-(2^53-1), booleans, null, arrays and objects whose member names
have no characters beyond U+FFFF. For anything else (floats!) use an RFC
8785 library such as the `rfc8785` package instead.
"""
import datetime
import fcntl
import hashlib
import json
import os
import sys


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def append(path, event_type, payload):
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # the same lock `ledgertail append` takes
        f.seek(0)
        # Small ledgers: read it all. Large ones: read back from the end.
        lines = [line for line in f.read().split(b"\n") if line.strip()]
        head = json.loads(lines[-1]) if lines else None
        event = {
            "seq": head["seq"] + 1 if head else 0,
            "prev_hash": head["hash"] if head else None,
            "ts": datetime.datetime.now(datetime.timezone.utc)
                  .isoformat().replace("+00:00", "Z"),
            "type": event_type,
            "payload": payload,
        }
        event["hash"] = hashlib.sha256(canonical(event)).hexdigest()
        f.write(canonical(event) + b"\n")
        f.flush()
        os.fsync(f.fileno())
        return event["seq"]


if __name__ == "__main__":
    ledger, event_type = sys.argv[1], sys.argv[2]
    for line in sys.stdin:
        if line.strip():
            append(ledger, event_type, json.loads(line))
