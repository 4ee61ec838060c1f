"""1,000 random payloads (floats of every magnitude, member names that
sort differently by UTF-16 than by code point, deep nesting, escapes),
appended and signed by this library: ``ledgertail verify`` finds one valid
signed chain (signatures required), and ``ledgertail replay`` mirrors
rows whose payloads equal the ones given."""

from __future__ import annotations

import math
import random
import struct

from conftest import mirrored_payloads, run, trusting_config, verify_ok

from ledgertail_producer import KeyFile, Writer, canonical, keygen, strict_loads

# Names around the surrogate range: U+E000..U+FFFF sort after U+10000 and
# up in UTF-16 (surrogates are D800..DFFF) but before them by code point.
NAMES = ["a", "B", "\u00e9", "\ufb01", "\uffff", "\U0001f600", "\U00010000", "\u20ac", "", " ", "\x7f", "\\", '"', "\u2028"]


def random_float(rng: random.Random) -> float:
    while True:
        kind = rng.randrange(4)
        if kind == 0:  # any finite double, by its bits
            value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        elif kind == 1:  # a decimal of any magnitude
            value = rng.uniform(-10, 10) * 10.0 ** rng.randint(-320, 308)
        elif kind == 2:  # near the formatting switches (1e-7, 1e21)
            value = rng.choice([1e-7, 1e21, 1e-6, 1e20, 5e-324, 1.7976931348623157e308]) * rng.choice([1, -1, 0.5, 1.0000001])
        else:
            value = rng.randint(-(2**53) + 1, 2**53 - 1) / rng.choice([1, 3, 7, 1024])
        if math.isfinite(value):
            return value


def random_string(rng: random.Random) -> str:
    pool = NAMES + ["\n", "\t", "\x00", "\x1f", "</script>", "\U0010ffff", "\ud7ff", "\ue000"]
    return "".join(rng.choice(pool) for _ in range(rng.randrange(6)))


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if kind == 3:
        return random_float(rng)
    if kind == 4:
        return random_string(rng)
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        rng.choice(NAMES) + random_string(rng): random_value(rng, depth + 1)
        for _ in range(rng.randrange(5))
    }


def deep(n: int):
    value: object = "bottom"
    for i in range(n):
        value = [value] if i % 2 else {"\U0001f600": value}
    return value


def test_random_payloads_signed_verify_and_replay_to_the_same_payloads(tmp_path, ledgertail):
    rng = random.Random(8785)
    payloads = [random_value(rng) for _ in range(990)] + [deep(n) for n in (50, 100, 120, 127)]
    payloads += [{"\ufb01": 1, "\U0001f600": 2, "\ue000": 3, "\U00010000": 4}] * 6
    key = keygen(tmp_path / "py.key", "py-key")
    ledger = tmp_path / "app.jsonl"
    writer = Writer(ledger, key=KeyFile.load(tmp_path / "py.key"))
    i = 0
    while i < len(payloads):  # singles and batches
        n = rng.choice([1, 1, 7, 50])
        if n == 1:
            writer.append("random", payloads[i], id=f"e{i}")
        else:
            writer.append_batch("random", payloads[i : i + n], ids=[f"e{j}" for j in range(i, min(i + n, len(payloads)))])
        i += n
    db = tmp_path / "mirror.db"
    config = trusting_config(tmp_path, ledger, {key.key_id: key.public_base64()}, db)
    text = verify_ok(ledgertail, config)
    assert "1000 events" in text, text
    out = run(ledgertail, "replay", "--config", str(config))
    assert out.returncode == 0, out.stderr.decode()
    rows = mirrored_payloads(db)
    assert len(rows) == len(payloads)
    for given, row in zip(payloads, rows):
        assert canonical(strict_loads(row)) == canonical(given)
