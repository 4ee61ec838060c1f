"""Writers of every kind at once on one ledger (contract §4's lock): four
processes of this library and four of ``ledgertail append`` (and four of
the Node library when it is there), 250 events each: one valid chain,
each payload once, each writer's events in its own order."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, run, writer_env

from ledgertail_producer import strict_loads

PER_WRITER = 250
PYTHON_WRITER = """
import sys
from ledgertail_producer import Writer
ledger, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = Writer(ledger)
for i in range(n):
    w.append("concurrent", {"writer": name, "n": i})
"""


def test_python_node_and_ledgertail_append_writing_at_once_make_one_chain(tmp_path, ledgertail):
    ledger = tmp_path / "shared.jsonl"
    env = writer_env()
    procs = []
    for k in range(4):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", PYTHON_WRITER, str(ledger), f"py-{k}", str(PER_WRITER)],
                env=env,
            )
        )
    for k in range(4):
        # One `ledgertail append` per event, so the writers interleave.
        script = "\n".join(
            f"echo '{{\"writer\":\"cli-{k}\",\"n\":{i}}}' | {ledgertail} append --ledger {ledger} --type concurrent >/dev/null 2>&1 || exit 1"
            for i in range(PER_WRITER)
        )
        procs.append(subprocess.Popen(["sh", "-c", script]))
    node = REPO / "producers" / "node" / "tests" / "concurrent-writer.mjs"
    node_ready = (REPO / "producers" / "node" / "node_modules" / "fs-ext").is_dir() and shutil.which("node")
    if not node_ready and os.environ.get("LEDGERTAIL_CI"):
        raise AssertionError("CI must have node and producers/node/node_modules (.ci/run runs npm ci)")
    if node_ready:
        for k in range(4):
            procs.append(subprocess.Popen(["node", str(node), str(ledger), f"node-{k}", str(PER_WRITER)]))
    for p in procs:
        assert p.wait(timeout=600) == 0
    writers = len(procs)
    out = run(ledgertail, "verify", "--ledger", str(ledger))
    text = (out.stdout + out.stderr).decode()
    assert out.returncode == 0, text
    assert f"{writers * PER_WRITER} events in the chain" in text, text
    events = [strict_loads(l) for l in ledger.read_text("utf-8").split("\n") if l]
    assert [e["seq"] for e in events] == list(range(writers * PER_WRITER))
    seen = {}
    for e in events:
        p = e["payload"]
        seen.setdefault(p["writer"], []).append(p["n"])
    assert len(seen) == writers
    for name, ns in seen.items():
        assert ns == list(range(PER_WRITER)), f"{name}'s events out of order or repeated"
