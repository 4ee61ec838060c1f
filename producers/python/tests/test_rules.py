"""The rules of ``ledgertail append`` (contract §4): bad payloads and a
ledger ending in an unfinished line are refused with the file unchanged
byte for byte; the head is found from the end of the live file (garbage
and over-long lines after it skipped) or of the newest rotated file; key
files interoperate with ``ledgertail keygen`` both ways."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import rfc8785
from conftest import run, trusting_config, verify_ok, writer_env

from ledgertail_producer import (
    HeadCompressedError,
    KeyFile,
    KeyFileError,
    LedgerFullError,
    PayloadError,
    UnfinishedLineError,
    Writer,
    keygen,
    strict_loads,
)
from ledgertail_producer._seal import MAX_SAFE_INTEGER, draft, seal

BAD_PAYLOADS = [
    float("nan"),
    float("inf"),
    -float("inf"),
    2**53,
    -(2**53),
    10**30,
    {1: "key not a string"},
    {"a": {1, 2}},
    b"bytes",
    object(),
    "\ud800 lone surrogate",
    {"\udc00": 1},
]


def test_bad_payloads_are_refused_and_nothing_is_written(tmp_path):
    ledger = tmp_path / "a.jsonl"
    w = Writer(ledger)
    w.append_batch("t", [0, 1])
    before = ledger.read_bytes()
    for bad in BAD_PAYLOADS:
        with pytest.raises(PayloadError):
            w.append("t", bad)
        with pytest.raises(PayloadError) as e:
            w.append_batch("t", [1, bad, 2])
        assert e.value.index == 1
        assert ledger.read_bytes() == before, repr(bad)
    for text in ['{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', "NaN", "[Infinity]", "1e400", "9007199254740993", "{"]:
        with pytest.raises(PayloadError):
            strict_loads(text)
    # Canonical spellings of large doubles are fine (contract §1.2).
    assert strict_loads("18446744073709552000") == 18446744073709552000.0
    too_deep = []
    for _ in range(127):
        too_deep = [too_deep]
    with pytest.raises(PayloadError, match="deeper"):
        w.append("t", too_deep)
    with pytest.raises(PayloadError, match="line limit"):
        Writer(ledger, max_line_bytes=300).append("t", "x" * 300)
    for bad_type in ["", "x" * 257, 7]:
        with pytest.raises(PayloadError):
            w.append(bad_type, 1)
    with pytest.raises(PayloadError, match="member of every event"):
        w.append("t", 1, extensions={"seq": 9})
    with pytest.raises(PayloadError):
        w.append("t", 1, id="")
    assert ledger.read_bytes() == before
    assert w.append("t", 2).seq == 2, "no seq used up"


def test_an_unfinished_last_line_is_refused_with_the_file_unchanged(tmp_path):
    ledger = tmp_path / "a.jsonl"
    Writer(ledger).append("t", 0)
    with open(ledger, "ab") as f:
        f.write(b'{"half')
    before = ledger.read_bytes()
    with pytest.raises(UnfinishedLineError) as e:
        Writer(ledger).append("t", 1)
    assert e.value.unfinished == 6
    assert ledger.read_bytes() == before


def test_the_head_is_found_from_the_end_past_garbage_and_long_lines(tmp_path, ledgertail):
    ledger = tmp_path / "a.jsonl"
    Writer(ledger).append_batch("t", [0, 1])
    with open(ledger, "ab") as f:
        f.write(b"garbage\n{}\n\n" + b'{"x":"' + b"y" * 200_000 + b'"}\n')
    # A fresh writer (no cache) continues the chain after seq 1.
    assert Writer(ledger, max_line_bytes=100_000).append("t", 2).seq == 2
    # A forged line with a wrong hash is not the head.
    line = json.loads(ledger.read_text().split("\n")[0])
    line["seq"] = 40
    with open(ledger, "a") as f:
        f.write(json.dumps(line) + "\n")
    assert Writer(ledger).append("t", 3).seq == 3
    out = run(ledgertail, "verify", "--ledger", str(ledger))
    # The garbage is quarantined by the sidecar, the chain is whole.
    assert b"4 events in the chain" in out.stdout + out.stderr, out.stdout


def test_the_head_comes_from_the_newest_rotated_file(tmp_path):
    ledger = tmp_path / "a.jsonl"
    w = Writer(ledger)
    w.append_batch("t", [0, 1])
    os.rename(ledger, tmp_path / "a.jsonl.2")
    w.append_batch("t", [2])
    os.rename(ledger, tmp_path / "a.jsonl.1")  # newer, though its name sorts first
    (tmp_path / "a.jsonl.bak").write_text("not an event\n")
    os.symlink(tmp_path / "a.jsonl.2", tmp_path / "a.jsonl.link")
    assert Writer(ledger).append("t", 3).seq == 3


def test_a_compressed_rotated_file_refuses_a_new_chain(tmp_path):
    ledger = tmp_path / "a.jsonl"
    (tmp_path / "a.jsonl.1.gz").write_bytes(b"\x1f\x8b compressed")
    with pytest.raises(HeadCompressedError):
        Writer(ledger).append("t", 0)
    assert ledger.read_bytes() == b""


def test_a_full_ledger_is_refused(tmp_path):
    ledger = tmp_path / "a.jsonl"
    d = draft("t", 0)
    first, h0 = seal(d, 0, None, "2026-01-01T00:00:00Z")
    last, _ = seal(d, MAX_SAFE_INTEGER, h0, "2026-01-01T00:00:00Z")
    ledger.write_bytes(first + last)
    with pytest.raises(LedgerFullError):
        Writer(ledger).append("t", 1)


def test_key_files_interoperate_with_ledgertail_keygen(tmp_path, ledgertail):
    # ledgertail's key signs here.
    out = run(ledgertail, "keygen", "--out", str(tmp_path / "rust.key"), "--key-id", "rust")
    assert out.returncode == 0, out.stderr
    rust_key = KeyFile.load(tmp_path / "rust.key")
    assert rust_key.trust_line() in out.stdout.decode()
    ledger = tmp_path / "app.jsonl"
    Writer(ledger, key=rust_key).append_batch("t", [{"by": "python"}] * 3)
    # This library's key signs in ledgertail append.
    py_key = keygen(tmp_path / "py.key")
    assert py_key.key_id == "py"
    assert stat.S_IMODE(os.stat(tmp_path / "py.key").st_mode) == 0o600
    with pytest.raises(KeyFileError, match="never overwritten"):
        keygen(tmp_path / "py.key")
    out = run(
        ledgertail, "append", "--ledger", str(ledger), "--key", str(tmp_path / "py.key"),
        stdin=b'{"by":"ledgertail"}\n',
    )
    assert out.returncode == 0, out.stderr
    keys = {"rust": rust_key.public_base64(), "py": py_key.public_base64()}
    text = verify_ok(ledgertail, trusting_config(tmp_path, ledger, keys, tmp_path / "m.db"))
    assert "4 events" in text
    # Bad key files: said plainly, never with the seed.
    (tmp_path / "bad.key").write_text('{"key_id":"x","seed":"AAAA"}')
    with pytest.raises(KeyFileError, match="32 bytes"):
        KeyFile.load(tmp_path / "bad.key")
    (tmp_path / "extra.key").write_text('{"key_id":"x","seed":"' + "A" * 43 + '=","more":1}')
    with pytest.raises(KeyFileError, match="exactly"):
        KeyFile.load(tmp_path / "extra.key")
    assert "seed" not in repr(rust_key)
    os.chmod(tmp_path / "rust.key", 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        KeyFile.load(tmp_path / "rust.key")


FULL_DISK_WRITER = """
import resource, signal, sys
from ledgertail_producer import Writer, WriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
ledger, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    Writer(ledger).append_batch("t", [{"n": i, "pad": "x" * 80} for i in range(20)])
except WriteError as e:
    print(len(e.appended), e)
    sys.exit(3)
"""


def test_a_write_that_fails_midway_leaves_only_whole_lines(tmp_path):
    import subprocess
    import sys

    ledger = tmp_path / "a.jsonl"
    Writer(ledger).append("t", 0)
    size = ledger.stat().st_size
    env = writer_env()
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(ledger), str(size + 1000)],
        capture_output=True, env=env, timeout=60,
    )
    assert out.returncode == 3, out.stderr.decode()
    reached = int(out.stdout.split()[0])
    assert 0 < reached < 20 and b"partial bytes were removed" in out.stdout
    data = ledger.read_bytes()
    assert data.endswith(b"\n") and len(data) <= size + 1000
    lines = [l for l in data.split(b"\n") if l]
    assert len(lines) == 1 + reached, "exactly the events reported reached the file"
    assert Writer(ledger).append("t", 1).seq == 1 + reached


def test_a_line_with_non_ascii_digits_in_ts_is_not_the_head(tmp_path, ledgertail):
    # The sidecar reads ts with ASCII digits only; a line whose ts has
    # Arabic-Indic digits is malformed there, so it must not be the head
    # here either (the next event would then halt the ledger on seq_gap).
    ledger = tmp_path / "a.jsonl"
    Writer(ledger).append_batch("t", [0, 1])
    last = json.loads(ledger.read_text().splitlines()[-1])
    forged = {
        "seq": 2,
        "ts": "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
        "type": "t",
        "payload": 2,
        "prev_hash": last["hash"],
    }
    forged["hash"] = hashlib.sha256(rfc8785.dumps(forged)).hexdigest()
    with open(ledger, "a", encoding="utf-8") as f:
        f.write(json.dumps(forged, ensure_ascii=False) + "\n")
    assert Writer(ledger).append("t", 3).seq == 2
    out = run(ledgertail, "verify", "--ledger", str(ledger))
    assert b"3 events in the chain" in out.stdout + out.stderr, out.stdout
    assert b"malformed" in out.stdout + out.stderr


def test_each_kind_of_bad_value_gets_its_own_hint(tmp_path):
    import datetime

    w = Writer(tmp_path / "a.jsonl")

    def hint(bad):
        with pytest.raises(PayloadError) as caught:
            w.append("t", bad)
        return caught.value.hint

    assert "NaN" in hint(float("nan"))
    assert "2^53" in hint(2**60)
    assert "isoformat" in hint(datetime.datetime(2026, 1, 1))
    assert "2^53" not in hint(datetime.datetime(2026, 1, 1))
    with pytest.raises(PayloadError) as caught:
        w.append_batch("t", [1, float("inf")])
    assert caught.value.index == 1 and "NaN" in caught.value.hint
