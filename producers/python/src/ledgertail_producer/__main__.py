"""``python -m ledgertail_producer keygen --out FILE [--key-id ID]``: the
same key file as ``ledgertail keygen``, and the ``[keys]`` line to trust it.
``python -m ledgertail_producer append --ledger FILE [--key FILE] [--type T]``:
one JSON payload per line on stdin, appended as one batch."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import KeyFile, LedgerError, Writer, keygen, strict_loads


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledgertail_producer")
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write a new key file (mode 0600, never overwriting)")
    k.add_argument("--out", required=True)
    k.add_argument("--key-id", default=None, help="default: the file's stem")
    a = sub.add_parser("append", help="append the JSON payloads on stdin (one per line)")
    a.add_argument("--ledger", required=True)
    a.add_argument("--key", default=None)
    a.add_argument("--type", default="event")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            key = keygen(args.out, args.key_id)
            print(f"wrote {args.out}; trust it in the sidecar's [keys]:", file=sys.stderr)
            print(key.trust_line())
            return 0
        payloads = [strict_loads(line) for line in sys.stdin if line.strip()]
        key = KeyFile.load(args.key) if args.key else None
        done = Writer(args.ledger, key=key).append_batch(args.type, payloads)
        if done:
            print(
                f"appended {len(done)} events to {args.ledger} (seq {done[0].seq}..={done[-1].seq})",
                file=sys.stderr,
            )
        return 0
    except LedgerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
