#!/usr/bin/env python3
"""Events per second of this library next to ``ledgertail append``, in the
same run, on the same disk (fsync on, as in production):

    python3 bench.py [--ledgertail PATH] [--singles N] [--batches N]

- single appends: one ``Writer.append`` per event (one lock, one fsync
  each); for the CLI, one ``ledgertail append`` process per event;
- batches of 1,000: ``Writer.append_batch``; for the CLI, one process
  reading 1,000 payloads on stdin.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from ledgertail_producer import Writer  # noqa: E402

BATCH = 1000


def payload(i: int) -> dict:
    return {"order": i, "customer": f"c{i % 97}", "total": "19.90", "items": [1, 2, 3]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledgertail", default=None)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    binary = args.ledgertail or shutil.which("ledgertail")
    if binary is None:
        here = Path(__file__).resolve().parents[2] / "target" / "release" / "ledgertail"
        binary = str(here) if here.exists() else None
    folder = Path(tempfile.mkdtemp(prefix="lt-py-bench-", dir=os.getcwd()))
    rows = []
    try:
        w = Writer(folder / "py-single.jsonl")
        t = time.perf_counter()
        for i in range(args.singles):
            w.append("bench", payload(i))
        rows.append(("python, single appends", args.singles / (time.perf_counter() - t)))
        w = Writer(folder / "py-batch.jsonl")
        batch = [payload(i) for i in range(BATCH)]
        t = time.perf_counter()
        for _ in range(args.batches):
            w.append_batch("bench", batch)
        rows.append(("python, batches of 1000", args.batches * BATCH / (time.perf_counter() - t)))
        if binary:
            import json

            line = (json.dumps(payload(0)) + "\n").encode()
            ledger = str(folder / "cli-single.jsonl")
            t = time.perf_counter()
            for _ in range(args.singles):
                subprocess.run([binary, "append", "--ledger", ledger, "--type", "bench"], input=line, check=True, capture_output=True)
            rows.append(("ledgertail append, one process per event", args.singles / (time.perf_counter() - t)))
            text = b"".join((json.dumps(payload(i)) + "\n").encode() for i in range(BATCH))
            ledger = str(folder / "cli-batch.jsonl")
            t = time.perf_counter()
            for _ in range(args.batches):
                subprocess.run([binary, "append", "--ledger", ledger, "--type", "bench"], input=text, check=True, capture_output=True)
            rows.append(("ledgertail append, 1000 per process", args.batches * BATCH / (time.perf_counter() - t)))
    finally:
        shutil.rmtree(folder)
    print("| writer | events/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")
    if binary:
        ratio = rows[1][1] / rows[3][1]
        print(f"\nbatched: python ÷ ledgertail append = {ratio:.2f} (aim: ≥ 0.25)")
    else:
        print("\n(no ledgertail binary found: pass --ledgertail PATH)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
