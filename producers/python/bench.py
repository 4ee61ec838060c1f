#!/usr/bin/env python3
"""Events per second of this library next to ``ledgertail append``, in the
same run, on the same disk (fsync on, as in production):

    python3 bench.py [--ledgertail PATH] [--singles N] [--batches N]

- single appends: one ``Writer.append`` per event (one lock, one fsync
  each); for the CLI, one ``ledgertail append`` process per event;
- batches of 1,000: ``Writer.append_batch``; for the CLI, one process
  reading 1,000 payloads on stdin;
- per log call: ``logging`` with ``LedgerHandler`` next to a
  ``FileHandler`` writing the same record as a JSON line, and structlog
  with ``LedgerProcessor`` next to the same chain without it (structlog
  when installed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from ledgertail_producer import LedgerHandler, LedgerProcessor, Writer  # noqa: E402

BATCH = 1000


def payload(i: int) -> dict:
    return {"order": i, "customer": f"c{i % 97}", "total": "19.90", "items": [1, 2, 3]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledgertail", default=None)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--log-calls", type=int, default=1000)
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
        calls = log_call_costs(folder, args.log_calls)
    finally:
        shutil.rmtree(folder)
    print("| writer | events/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")
    print("\n| per log call | µs |\n|---|---|")
    for name, micros in calls:
        print(f"| {name} | {micros:,.1f} |")
    if binary:
        ratio = rows[1][1] / rows[3][1]
        print(f"\nbatched: python ÷ ledgertail append = {ratio:.2f} (aim: ≥ 0.25)")
    else:
        print("\n(no ledgertail binary found: pass --ledgertail PATH)")
    return 0


class _JsonLines(logging.Formatter):
    """What a plain JSON log handler writes: the record's fields as one
    JSON line (the same members LedgerHandler seals)."""

    def __init__(self) -> None:
        super().__init__()
        self.sealer = LedgerHandler.__new__(LedgerHandler)

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(LedgerHandler.payload(self.sealer, record))


def _per_call(log_once, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        log_once(i)
    return (time.perf_counter() - t) / n * 1e6


def log_call_costs(folder: Path, n: int) -> list:
    """Microseconds per log call, each handler next to its plain twin."""
    out = []
    for name, handler in (
        ("logging, FileHandler writing JSON lines", logging.FileHandler(folder / "plain.log")),
        ("logging, LedgerHandler (fsync per record)", LedgerHandler(folder / "sealed.jsonl")),
        ("logging, LedgerHandler (fsync=False)", LedgerHandler(folder / "nosync.jsonl", fsync=False)),
    ):
        if isinstance(handler, logging.FileHandler):
            handler.setFormatter(_JsonLines())
        log = logging.getLogger(f"bench.{len(out)}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        out.append((name, _per_call(lambda i: log.info("order placed", extra=payload(i)), n)))
        handler.close()
    try:
        import structlog
    except ImportError:
        out.append(("structlog (not installed: pip install structlog)", float("nan")))
        return out
    for name, sealer in (
        ("structlog, JSONRenderer to a file", None),
        ("structlog, + LedgerProcessor (fsync per event)", LedgerProcessor(folder / "struct.jsonl")),
        ("structlog, + LedgerProcessor (fsync=False)", LedgerProcessor(folder / "struct-nosync.jsonl", fsync=False)),
    ):
        sink = open(folder / f"struct-{len(out)}.log", "w")
        processors = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
        processors += [sealer] if sealer else []
        processors.append(structlog.processors.JSONRenderer())
        log = structlog.wrap_logger(structlog.WriteLogger(sink), processors=processors)
        out.append((name, _per_call(lambda i: log.info("order placed", **payload(i)), n)))
        sink.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
