"""Write a ledgertail ledger correctly from Python.

    from ledgertail_producer import Writer, KeyFile

    writer = Writer("ledger.jsonl", key=KeyFile.load("producer.key"))
    appended = writer.append("order.created", {"order": 42, "total": "19.90"})
    print(appended.seq, appended.hash)

Each event is sealed as the ledger format says (SHA-256 over its RFC 8785
canonical form, chained to the previous event, optionally Ed25519-signed)
and appended with the rules of ``ledgertail append``: an exclusive
``flock`` on the live file shared with every other writer, the head found
from the end of the file, one ``write`` per line, ``fsync`` per call, and
nothing half-written on any error.

``LedgerHandler`` (a ``logging.Handler``) and ``LedgerProcessor`` (a
structlog processor) seal each log record the same way.
"""

from importlib import metadata as _metadata

from ._errors import (
    HeadCompressedError,
    KeyFileError,
    LedgerError,
    LedgerFullError,
    PayloadError,
    UnfinishedLineError,
    WriteError,
)
from ._keyfile import KeyFile, keygen
from ._logging import LedgerHandler, LedgerProcessor
from ._seal import DEFAULT_MAX_LINE_BYTES, MAX_SAFE_INTEGER, canonical, strict_loads
from ._writer import Appended, Writer

try:
    # The installed distribution's version: one source, pyproject.toml.
    __version__ = _metadata.version("ledgertail-producer")
except _metadata.PackageNotFoundError:  # run from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Appended",
    "DEFAULT_MAX_LINE_BYTES",
    "HeadCompressedError",
    "KeyFile",
    "KeyFileError",
    "LedgerError",
    "LedgerHandler",
    "LedgerProcessor",
    "LedgerFullError",
    "MAX_SAFE_INTEGER",
    "PayloadError",
    "UnfinishedLineError",
    "WriteError",
    "Writer",
    "canonical",
    "keygen",
    "strict_loads",
]
