"""The package stands on its own: it builds as a wheel with its typed
modules, from this folder alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def test_the_package_builds_a_wheel_with_its_modules(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside it.
    source = tmp_path / "source"
    shutil.copytree(HERE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr.decode()
    (wheel,) = tmp_path.glob("ledgertail_producer-0.1.0-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("__init__", "__main__", "_seal", "_head", "_writer", "_keyfile", "_errors"):
        assert f"ledgertail_producer/{module}.py" in names
    assert "ledgertail_producer/py.typed" in names
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: rfc8785" in text and "Requires-Dist: cryptography" in text


def test_the_installed_wheel_says_its_version_and_appends(tmp_path):
    # Installed as a user installs it (into a venv, from the wheel), then
    # imported from outside this source tree.
    source = tmp_path / "source"
    shutil.copytree(HERE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    wheels = tmp_path / "wheels"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr.decode()
    venv = tmp_path / "venv"
    # The dependencies (rfc8785, cryptography) come from this interpreter.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    (wheel,) = wheels.glob("*.whl")
    out = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    script = (
        "import ledgertail_producer as lt, sys; "
        "print(lt.__version__); print(lt.__file__); "
        "print(lt.Writer(sys.argv[1]).append('t', {'n': 1}).seq)"
    )
    out = subprocess.run(
        [str(python), "-c", script, str(tmp_path / "a.jsonl")],
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr.decode()
    version, location, seq = out.stdout.decode().split("\n")[:3]
    assert version == "0.1.0"
    assert location.startswith(str(venv)), location
    assert seq == "0"
