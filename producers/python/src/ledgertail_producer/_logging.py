"""Sealing at the source, in the logging stacks apps already use: a
``logging.Handler`` and a structlog processor that append each log record
as a sealed event, with the rules of every other writer (one ``flock``
shared with them, ``fsync`` per record unless told otherwise, nothing
half-written).

A log call never raises because of the ledger: a record that cannot be
appended is reported the way ``logging`` reports a failing handler (a
traceback on stderr, see ``logging.raiseExceptions``), and the next record
is tried again. Values JSON cannot hold are written as text: a
``datetime`` as its ISO form, an integer beyond ±(2^53−1) and NaN or
Infinity as their decimal text, anything else as ``str(value)``.
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import threading
import traceback
from typing import Any, Dict, Mapping, MutableMapping, Optional

from ._keyfile import KeyFile, PathLike
from ._seal import DEFAULT_MAX_LINE_BYTES, MAX_SAFE_INTEGER
from ._writer import Appended, Writer

# The attributes every LogRecord has: anything else on a record is the
# caller's structured data (``extra=`` or a filter's).
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

# Deeper than the ledger's nesting limit (127 levels) is written as text.
_MAX_DEPTH = 100


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as a JSON value the ledger takes (see the module's text)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _type_of(payload: Mapping[str, Any], type_field: Optional[str], fallback: str) -> str:
    if type_field is not None:
        named = payload.get(type_field)
        if isinstance(named, str) and 1 <= len(named.encode("utf-8")) <= 256:
            return named
    return fallback


class LedgerHandler(logging.Handler):
    """A ``logging`` handler that appends each record to the ledger whose
    live file is ``path``, as a sealed event.

    The payload holds ``message`` (the formatted message), ``level``,
    ``logger``, ``time`` (the record's creation, RFC 3339 UTC), the
    record's structured data (``extra=``), and ``exception`` / ``stack``
    when the record has them. The event's ``type`` is the member
    ``type_field`` names when it holds a string, else ``type``, else the
    logger's name. ``key`` signs every event; ``fsync=False`` leaves the
    line in the page cache (an application crash loses nothing, a power
    loss may lose the last records).

        handler = LedgerHandler("audit.jsonl")
        logging.getLogger("orders").addHandler(handler)
        logging.getLogger("orders").warning("refund", extra={"order": 42})
    """

    def __init__(
        self,
        path: PathLike,
        key: Optional[KeyFile] = None,
        *,
        type: Optional[str] = None,
        type_field: Optional[str] = None,
        level: int = logging.NOTSET,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        fsync: bool = True,
    ) -> None:
        super().__init__(level)
        self.writer = Writer(path, key, max_line_bytes=max_line_bytes, fsync=fsync)
        self.type = type
        self.type_field = type_field
        self.last: Optional[Appended] = None

    def payload(self, record: logging.LogRecord) -> Dict[str, Any]:
        """The payload of ``record`` (see the class's text)."""
        payload: Dict[str, Any] = {
            "message": record.getMessage(),
            "level": record.levelname,
            "logger": record.name,
            "time": _utc(record.created),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                payload[name] = jsonable(value)
        if record.exc_info:
            payload["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            payload["stack"] = record.stack_info
        return payload

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = self.payload(record)
            kind = _type_of(payload, self.type_field, self.type or record.name)
            self.last = self.writer.append(kind, payload)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


class LedgerProcessor:
    """A structlog processor that appends each event dict to the ledger
    whose live file is ``path``, as a sealed event, and passes it on
    unchanged (so the app's own output goes on as before). Put it after
    the processors that add what you want sealed (the level, a
    timestamp) and before the renderer:

        structlog.configure(processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            LedgerProcessor("audit.jsonl"),
            structlog.processors.JSONRenderer(),
        ])

    The payload is the event dict (``event`` is structlog's message), with
    ``level`` set from the method name when no processor added it. The
    event's ``type`` is the member ``type_field`` names when it holds a
    string, else ``type`` (default ``"log"``). ``key`` and ``fsync`` are
    :class:`LedgerHandler`'s. A record that cannot be appended is reported
    on stderr and the event passes on.
    """

    def __init__(
        self,
        path: PathLike,
        key: Optional[KeyFile] = None,
        *,
        type: str = "log",
        type_field: Optional[str] = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        fsync: bool = True,
    ) -> None:
        self.writer = Writer(path, key, max_line_bytes=max_line_bytes, fsync=fsync)
        self.type = type
        self.type_field = type_field
        self.last: Optional[Appended] = None
        # One append at a time per processor: the writer keeps the head it
        # wrote last between calls.
        self._lock = threading.Lock()

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            payload = {str(k): jsonable(v) for k, v in event_dict.items()}
            payload.setdefault("level", method_name)
            kind = _type_of(payload, self.type_field, self.type)
            with self._lock:
                self.last = self.writer.append(kind, payload)
        except Exception as e:  # noqa: BLE001 - a log call never raises
            hint = getattr(e, "hint", None)
            print(
                f"ledgertail_producer: a structlog event was not sealed into {self.writer.path}: {e}"
                + (f" (hint: {hint})" if hint else ""),
                file=sys.stderr,
            )
        return event_dict


def _utc(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
