"""Sealing at the source through the logging stacks apps already use:
``LedgerHandler`` for ``logging`` and ``LedgerProcessor`` for structlog,
checked by ``ledgertail verify`` and from several processes at once."""

from __future__ import annotations

import datetime
import io
import json
import logging
import subprocess
import sys

import structlog

from conftest import run, writer_env

from ledgertail_producer import LedgerHandler, LedgerProcessor, strict_loads


def events(ledger):
    return [strict_loads(l) for l in ledger.read_text("utf-8").split("\n") if l]


def verify(ledgertail, ledger) -> str:
    out = run(ledgertail, "verify", "--ledger", str(ledger))
    text = (out.stdout + out.stderr).decode()
    assert out.returncode == 0, text
    return text


def logger_to(ledger, name, **kwargs):
    log = logging.getLogger(name)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.DEBUG)
    handler = LedgerHandler(ledger, **kwargs)
    log.addHandler(handler)
    return log, handler


def test_each_logging_record_becomes_a_sealed_event_with_its_structured_data(tmp_path, ledgertail):
    ledger = tmp_path / "app.jsonl"
    log, handler = logger_to(ledger, "orders.refunds")
    log.info("refund of %s", "19.90", extra={"order": 42, "when": datetime.date(2026, 12, 7)})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("could not refund", extra={"big": 2**60, "ratio": float("nan")})
    log.warning("plain")
    got = events(ledger)
    assert [e["seq"] for e in got] == [0, 1, 2]
    assert all(e["type"] == "orders.refunds" for e in got)
    first = got[0]["payload"]
    assert first["message"] == "refund of 19.90"
    assert (first["level"], first["logger"], first["order"], first["when"]) == (
        "INFO",
        "orders.refunds",
        42,
        "2026-12-07",
    )
    assert first["time"].endswith("Z")
    second = got[1]["payload"]
    assert second["level"] == "ERROR" and "ZeroDivisionError" in second["exception"]
    # What JSON cannot hold is written as text, and the record is kept.
    assert (second["big"], second["ratio"]) == (str(2**60), "nan")
    assert handler.last.seq == 2
    assert "3 events in the chain" in verify(ledgertail, ledger)


def test_the_type_comes_from_a_field_or_the_fixed_type(tmp_path):
    ledger = tmp_path / "app.jsonl"
    log, _ = logger_to(ledger, "typed", type="audit", type_field="event_type")
    log.info("a", extra={"event_type": "user.login"})
    log.info("b")
    log.info("c", extra={"event_type": 7})
    assert [e["type"] for e in events(ledger)] == ["user.login", "audit", "audit"]


def test_a_record_that_cannot_be_written_is_reported_and_the_next_one_goes_in(tmp_path, capsys):
    ledger = tmp_path / "app.jsonl"
    ledger.write_bytes(b'{"unfinished"')  # another writer died mid-line
    log, _ = logger_to(ledger, "broken")
    log.info("lost")
    assert "UnfinishedLineError" in capsys.readouterr().err
    ledger.write_bytes(b"")
    log.info("kept")
    assert [e["payload"]["message"] for e in events(ledger)] == ["kept"]


def test_the_structlog_processor_seals_each_event_and_passes_it_on(tmp_path, ledgertail):
    ledger = tmp_path / "app.jsonl"
    out = io.StringIO()
    sealer = LedgerProcessor(ledger, type_field="kind")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            sealer,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()
        log.info("user logged in", user="ada", kind="user.login")
        log.warning("disk almost full", free_bytes=2**62)
    finally:
        structlog.reset_defaults()
    got = events(ledger)
    assert [e["type"] for e in got] == ["user.login", "log"]
    assert got[0]["payload"]["event"] == "user logged in"
    assert (got[0]["payload"]["level"], got[0]["payload"]["user"]) == ("info", "ada")
    assert got[1]["payload"]["free_bytes"] == str(2**62)
    # The app's own output is unchanged.
    rendered = [json.loads(l) for l in out.getvalue().splitlines()]
    assert [r["event"] for r in rendered] == ["user logged in", "disk almost full"]
    assert rendered[1]["free_bytes"] == 2**62
    assert sealer.last.seq == 1
    verify(ledgertail, ledger)


PER_PROCESS = 150
LOGGING_WRITER = """
import logging, sys
from ledgertail_producer import LedgerHandler
ledger, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = logging.getLogger(name)
log.setLevel(logging.INFO)
log.addHandler(LedgerHandler(ledger))
for i in range(n):
    log.info("step", extra={"writer": name, "n": i})
"""
STRUCTLOG_WRITER = """
import sys, structlog
from ledgertail_producer import LedgerProcessor
ledger, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
structlog.configure(processors=[LedgerProcessor(ledger), structlog.processors.JSONRenderer()],
                    logger_factory=structlog.PrintLoggerFactory(open("/dev/null", "w")))
log = structlog.get_logger()
for i in range(n):
    log.info("step", writer=name, n=i)
"""


def test_handlers_in_several_processes_make_one_chain(tmp_path, ledgertail):
    ledger = tmp_path / "shared.jsonl"
    env = writer_env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ledger), f"{kind}-{k}", str(PER_PROCESS)], env=env
        )
        for kind, script in (("logging", LOGGING_WRITER), ("structlog", STRUCTLOG_WRITER))
        for k in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0
    assert f"{len(procs) * PER_PROCESS} events in the chain" in verify(ledgertail, ledger)
    seen = {}
    for e in events(ledger):
        seen.setdefault(e["payload"]["writer"], []).append(e["payload"]["n"])
    assert len(seen) == len(procs)
    for name, ns in seen.items():
        assert ns == list(range(PER_PROCESS)), f"{name}'s records out of order or repeated"
