"""Sealing an event and judging a line, as contract §1 says: the event
hash is SHA-256 over the RFC 8785 canonical form of the event without
``hash`` and ``sig`` (the ``rfc8785`` package writes it), the signature is
Ed25519 over the hash's 32 bytes (``cryptography``), and a line is an
event only when the sidecar would find it well formed with a correct hash.

Pure: no file is touched here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import unicodedata
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import rfc8785

from ._errors import HINT_BIG_INTEGER, HINT_NOT_FINITE, HINT_NOT_JSON, PayloadError

#: The largest integer a payload may hold (I-JSON, contract §1.2).
MAX_SAFE_INTEGER = 2**53 - 1
#: The sidecar's nesting limit for a whole line; the event object is one
#: level of it, so a payload may nest one level less.
MAX_LINE_DEPTH = 128
#: The sidecar's default line limit (``max_line_bytes``).
DEFAULT_MAX_LINE_BYTES = 1_048_576

#: Members the contract defines; an extension may not use these names.
RESERVED = frozenset(
    ["seq", "ts", "type", "payload", "prev_hash", "hash", "id", "key_id", "sig"]
)

_HEX64 = re.compile(r"[0-9a-f]{64}")


class Head(NamedTuple):
    """The last event of a ledger: the next one continues from it."""

    seq: int
    hash: str


def canonical(value: Any, where: str = "payload") -> bytes:
    """The RFC 8785 canonical bytes of ``value``, or :class:`PayloadError`
    saying why it cannot be sealed (NaN, Infinity, an integer beyond
    ±(2^53−1), a key that is not a string, a lone surrogate, a value JSON
    does not have, nesting deeper than the sidecar accepts)."""
    _check_depth(value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"{where} is {value!r}: JSON has no NaN or Infinity", hint=HINT_NOT_FINITE)
    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError as e:
        raise PayloadError(
            f"{where} holds an integer beyond ±(2^53−1) ({e}); write it as a string", hint=HINT_BIG_INTEGER
        ) from None
    except rfc8785.FloatDomainError as e:
        raise PayloadError(f"{where} holds {e}", hint=HINT_NOT_FINITE) from None
    except rfc8785.CanonicalizationError as e:
        raise PayloadError(f"{where} is not JSON: {e}", hint=HINT_NOT_JSON) from None
    except UnicodeError:
        # rfc8785 0.1.4 raises this (not its own error) for a lone
        # surrogate in a member name.
        raise PayloadError(f"{where} holds a lone surrogate: not UTF-8") from None
    except RecursionError:
        raise PayloadError(f"{where} nests too deeply") from None


def _check_depth(value: Any, where: str) -> None:
    """Objects and arrays may nest MAX_LINE_DEPTH − 1 levels inside the
    event (walked without recursion, so any depth is refused cleanly)."""
    limit = MAX_LINE_DEPTH - 1
    stack: List[Tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, tuple)):
            children = item
        elif isinstance(item, dict):
            children = item.values()
        else:
            continue
        if depth + 1 > limit:
            raise PayloadError(
                f"{where} nests objects and arrays deeper than {limit} levels (the sidecar reads lines up to {MAX_LINE_DEPTH})"
            )
        stack.extend((c, depth + 1) for c in children)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _object(members: List[Tuple[str, bytes]]) -> bytes:
    """A canonical object from canonical member values (names sorted by
    UTF-16 code units, as RFC 8785 §3.2.3 says)."""
    members.sort(key=lambda m: _utf16_key(m[0]))
    parts = [rfc8785.dumps(name) + b":" + value for name, value in members]
    return b"{" + b",".join(parts) + b"}"


def valid_text(value: Any, what: str, most: int) -> str:
    """A string member of 1 to ``most`` UTF-8 bytes."""
    if not isinstance(value, str):
        raise PayloadError(f"{what} must be a string, not {type(value).__name__}")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(f"{what} holds a lone surrogate") from None
    if not 1 <= n <= most:
        raise PayloadError(f"{what} must be 1 to {most} bytes, not {n}")
    return value


def valid_key_id(key_id: Any) -> bool:
    """1 to 128 bytes with no control character (as ``ledgertail keygen``)."""
    try:
        valid_text(key_id, "key_id", 128)
    except PayloadError:
        return False
    return not any(unicodedata.category(c) == "Cc" for c in key_id)


class Draft(NamedTuple):
    """A payload checked and canonicalized, waiting for its place in the
    chain (sealing under the lock only adds seq, ts and prev_hash)."""

    type_json: bytes
    payload_json: bytes
    id_json: Optional[bytes]
    extensions: Tuple[Tuple[str, bytes], ...]


class Kind(NamedTuple):
    """What the events of one call share: their type and extensions,
    checked and canonicalized once."""

    type_json: bytes
    extensions: Tuple[Tuple[str, bytes], ...]


def kind(event_type: str, extensions: Optional[Mapping[str, Any]] = None) -> Kind:
    valid_text(event_type, "type", 256)
    ext: List[Tuple[str, bytes]] = []
    for name, value in (extensions or {}).items():
        if not isinstance(name, str):
            raise PayloadError(f"extension name {name!r} is not a string")
        if name in RESERVED:
            raise PayloadError(
                f"extension {name!r} is a member of every event; pick another name"
            )
        canonical(name, "an extension's name")
        ext.append((name, canonical(value, f"extension {name!r}")))
    # (A dict cannot repeat a name, so no member can be repeated.)
    return Kind(canonical(event_type, "type"), tuple(ext))


def draft(
    event_type: "str | Kind",
    payload: Any,
    event_id: Optional[str] = None,
    extensions: Optional[Mapping[str, Any]] = None,
) -> Draft:
    """Checks everything about an event that does not depend on the head."""
    k = event_type if isinstance(event_type, Kind) else kind(event_type, extensions)
    if event_id is not None:
        valid_text(event_id, "id", 256)
    return Draft(
        type_json=k.type_json,
        payload_json=canonical(payload),
        id_json=None if event_id is None else canonical(event_id, "id"),
        extensions=k.extensions,
    )


def _ascii(text: str) -> bytes:
    """A JSON string of characters that need no escape (hex digits, base64,
    an RFC 3339 time): its canonical form is the text in quotes."""
    return b'"' + text.encode("ascii") + b'"'


def seal(
    d: Draft,
    seq: int,
    prev_hash: Optional[str],
    ts: str,
    signer: Optional[Tuple[str, Any]] = None,
) -> Tuple[bytes, str]:
    """The event's line (canonical, with its LF) and its hash. ``signer`` is
    (key_id, an Ed25519 private key of ``cryptography``)."""
    key_json = None if signer is None else rfc8785.dumps(signer[0])
    prev = b"null" if prev_hash is None else _ascii(prev_hash)
    seq_json = str(seq).encode()
    ts_json = _ascii(ts)
    if d.extensions:
        members: List[Tuple[str, bytes]] = [
            ("seq", seq_json), ("ts", ts_json), ("type", d.type_json),
            ("payload", d.payload_json), ("prev_hash", prev),
        ]  # fmt: skip
        if d.id_json is not None:
            members.append(("id", d.id_json))
        if key_json is not None:
            members.append(("key_id", key_json))
        members.extend(d.extensions)
        digest = hashlib.sha256(_object(list(members))).digest()
        members.append(("hash", _ascii(digest.hex())))
        if signer is not None:
            members.append(("sig", _ascii(base64.b64encode(signer[1].sign(digest)).decode())))
        return _object(members) + b"\n", digest.hex()
    # The usual event: its members' canonical order is fixed (ASCII names:
    # hash id key_id payload prev_hash seq sig ts type), so it is written
    # straight, without sorting.
    head = b"" if d.id_json is None else b'"id":' + d.id_json + b","
    if key_json is not None:
        head += b'"key_id":' + key_json + b","
    head += b'"payload":' + d.payload_json + b',"prev_hash":' + prev + b',"seq":' + seq_json
    tail = b',"ts":' + ts_json + b',"type":' + d.type_json + b"}"
    digest = hashlib.sha256(b"{" + head + tail).digest()
    sig = b""
    if signer is not None:
        sig = b',"sig":' + _ascii(base64.b64encode(signer[1].sign(digest)).decode())
    line = b'{"hash":' + _ascii(digest.hex()) + b"," + head + sig + tail + b"\n"
    return line, digest.hex()


# Judging lines (finding the head) ----------------------------------------


class _NotEvent(Exception):
    pass


class _Literal(int):
    """An integer that remembers how it was written (seq must be plain
    digits)."""

    literal: str


def _big_int(value: int, text: str) -> float:
    """Beyond 2^53−1 an integer must be spelled as RFC 8785 writes its
    double (contract §1.2); it then reads as that double."""
    as_float = float(value)
    if rfc8785.dumps(as_float).decode() != text:
        raise _NotEvent()
    return as_float


def _parse_int(text: str) -> Any:
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        return _big_int(value, text)
    out = _Literal(value)
    out.literal = text
    return out


def _parse_plain_int(text: str) -> Any:
    value = int(text)
    return value if abs(value) <= MAX_SAFE_INTEGER else _big_int(value, text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotEvent()
    return value


def _reject_constant(_: str) -> Any:
    raise _NotEvent()


def _no_repeats(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise _NotEvent()
        out[name] = value
    return out


def _loads(text: str, parse_int: Any) -> Any:
    """json.loads with the contract's refusals (``_NotEvent``)."""
    return json.loads(
        text,
        object_pairs_hook=_no_repeats,
        parse_int=parse_int,
        parse_float=_parse_float,
        parse_constant=_reject_constant,
    )


def strict_loads(text: str) -> Any:
    """JSON as the contract reads it: repeated member names, NaN, Infinity,
    numbers that overflow and integers beyond 2^53−1 not spelled as their
    double are refused (:class:`PayloadError`)."""
    try:
        return _loads(text, _parse_plain_int)
    except _NotEvent:
        raise PayloadError(
            "not acceptable JSON: a repeated member name, NaN or Infinity, a number out of range, or an integer beyond ±(2^53−1)",
            hint="write such numbers as strings, and each member name once",
        ) from None
    except (ValueError, RecursionError) as e:
        raise PayloadError(f"not JSON: {e}") from None


# ASCII digits only ([0-9], not \d: in Python's str patterns that also
# matches other scripts' digits, which the sidecar refuses; a line it
# calls malformed must never become this writer's head).
_TS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-]([0-9]{2}):([0-9]{2}))\Z"
)


def is_rfc3339(ts: str) -> bool:
    m = _TS.match(ts)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 60:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = [31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    if not 1 <= day <= days:
        return False
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    return True


def _depth_ok(value: Any) -> bool:
    try:
        _check_depth([value], "line")
    except PayloadError:
        return False
    return True


def _text(value: Any, most: int) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return 1 <= len(value.encode("utf-8")) <= most
    except UnicodeEncodeError:
        return False


def judge_line(line: bytes) -> Optional[Head]:
    """The event a line holds when the sidecar would find it well formed
    with a correct hash (signatures are not checked), else ``None``."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.startswith("\ufeff") or not text.strip(" \t\r\n"):
        return None
    try:
        event = _loads(text, _parse_int)
    except (_NotEvent, ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or not _depth_ok(event):
        return None
    seq = event.get("seq")
    if not isinstance(seq, _Literal) or not seq.literal.isdigit():
        return None
    if "payload" not in event or not _text(event.get("type"), 256):
        return None
    if not isinstance(event.get("ts"), str) or not is_rfc3339(event["ts"]):
        return None
    prev = event.get("prev_hash", 0)
    if (seq == 0) != (prev is None) or (
        prev is not None and not (isinstance(prev, str) and _HEX64.fullmatch(prev))
    ):
        return None
    claimed = event.get("hash")
    if not isinstance(claimed, str) or not _HEX64.fullmatch(claimed):
        return None
    if "id" in event and not _text(event["id"], 256):
        return None
    if "key_id" in event and not _text(event["key_id"], 128):
        return None
    if "sig" in event:
        if "key_id" not in event or not _is_signature(event["sig"]):
            return None
    body = {k: v for k, v in event.items() if k not in ("hash", "sig")}
    try:
        digest = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    except (rfc8785.CanonicalizationError, UnicodeError, RecursionError):
        return None
    if digest != claimed:
        return None
    return Head(int(seq), claimed)


def _is_signature(sig: Any) -> bool:
    if not isinstance(sig, str):
        return False
    try:
        raw = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 64 and base64.b64encode(raw).decode() == sig
