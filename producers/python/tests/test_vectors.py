"""Every payload the contract's test vectors mirror, sealed by this
library, has the manifest's canonical ``payload_jcs`` byte for byte, and
the ledger it makes is one valid chain for ``ledgertail verify``."""

from __future__ import annotations

import json

from conftest import VECTORS, run

from ledgertail_producer import Writer, canonical, strict_loads


def mirrored_lines():
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    for case in manifest["cases"]:
        for line in case["expect"]["lines"]:
            if line.get("payload_jcs") is not None:
                raw = (VECTORS / line["file"]).read_bytes()
                text = raw[line["offset"] : line["offset"] + line["length"]]
                yield case["name"], line, strict_loads(text.decode("utf-8"))


def test_every_vector_payload_seals_to_the_manifests_canonical_form(tmp_path, ledgertail):
    cases = list(mirrored_lines())
    assert len(cases) > 100, "the manifest's mirrored lines were found"
    ledger = tmp_path / "vectors.jsonl"
    writer = Writer(ledger, fsync=False)
    for name, line, event in cases:
        want = line["payload_jcs"].encode("utf-8")
        assert canonical(event["payload"]) == want, (name, line["line"])
        writer.append("vector", event["payload"])
    # What was written reads back to the same canonical payloads.
    # (Split on LF only: str.splitlines also splits at U+2028 and U+0085.)
    written = [strict_loads(l) for l in ledger.read_text("utf-8").split("\n") if l]
    assert [canonical(e["payload"]) for e in written] == [
        l["payload_jcs"].encode("utf-8") for _, l, _ in cases
    ]
    out = run(ledgertail, "verify", "--ledger", str(ledger))
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
