"""What the tests share: the ledgertail binary (``LEDGERTAIL_BIN``, else
this repository's build), the repository's copy of the contract's test
vectors, and helpers that run ``ledgertail`` on a ledger."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "data" / "vectors"


def _binary() -> Optional[Path]:
    named = os.environ.get("LEDGERTAIL_BIN")
    if named:
        return Path(named)
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "ledgertail"
        if candidate.exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def ledgertail() -> Path:
    found = _binary()
    if found is None:
        if os.environ.get("LEDGERTAIL_CI"):
            pytest.fail("no ledgertail binary: set LEDGERTAIL_BIN or run cargo build")
        pytest.skip("no ledgertail binary: set LEDGERTAIL_BIN or run cargo build")
    return found


def run(binary: Path, *args: str, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), *args], input=stdin, capture_output=True, timeout=600
    )


def trusting_config(folder: Path, ledger: Path, keys: Dict[str, str], db: Path) -> Path:
    """A config with one ledger, signatures required from ``keys``."""
    lines = [f'db = "{db}"', "[keys]"]
    lines += [f'{json.dumps(k)} = "{v}"' for k, v in keys.items()]
    lines += ["[[ledger]]", 'name = "app"', f'path = "{ledger}"', 'signatures = "required"']
    config = folder / "ledgertail.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def verify_ok(binary: Path, config: Path) -> str:
    out = run(binary, "verify", "--config", str(config))
    text = out.stdout.decode() + out.stderr.decode()
    assert out.returncode == 0, text
    return text


def mirrored_payloads(db: Path) -> List[str]:
    import sqlite3

    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute("SELECT payload FROM events ORDER BY seq")]


def writer_env() -> Dict[str, str]:
    """The environment for a child Python that writes with this library:
    it imports the package from where these tests imported it (the source
    tree, or the installed wheel when the suite tests that)."""
    import ledgertail_producer

    return dict(os.environ, PYTHONPATH=str(Path(ledgertail_producer.__file__).resolve().parents[1]))
