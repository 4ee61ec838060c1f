"""The errors of the producer library: every refusal leaves the ledger as
it was, except :class:`WriteError`, which says exactly which events reached
the file whole."""

from __future__ import annotations

from typing import List, Optional, Sequence


class LedgerError(Exception):
    """Anything this library refuses or fails to do."""

    hint: Optional[str] = None

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (hint: {self.hint})" if self.hint else text


class PayloadError(LedgerError, ValueError):
    """An event that cannot be sealed: NaN or Infinity, an integer beyond
    ±(2^53−1), a value JSON does not have, a repeated member name, nesting
    too deep, a line over the sidecar's limit. Nothing was written.
    ``index`` is the event's position in its batch."""

    hint = "payloads are JSON values: dict, list, str, int, float, bool, None"

    def __init__(self, message: str, index: Optional[int] = None, hint: Optional[str] = None) -> None:
        if index is not None:
            message = f"event {index + 1} of the batch: {message}; nothing of the batch was written"
        super().__init__(message)
        self.index = index
        if hint is not None:
            self.hint = hint


#: The hints of the payload refusals that have a specific fix.
HINT_NOT_FINITE = "JSON has no NaN or Infinity: write None, or the value as a string"
HINT_BIG_INTEGER = "write integers beyond ±(2^53−1) as strings"
HINT_NOT_JSON = (
    "convert it to JSON values first: a datetime as d.isoformat(), a set as a list, bytes as base64 text"
)


class UnfinishedLineError(LedgerError):
    """The ledger ends in bytes after its last newline: a writer died
    mid-line or is still writing. Nothing was written."""

    hint = "if no writer is running, the line will never complete: investigate before removing it"

    def __init__(self, path: str, unfinished: int) -> None:
        super().__init__(
            f"{path}: the ledger ends in an unfinished line ({unfinished} bytes after the last newline); refusing to append after it"
        )
        self.path = path
        self.unfinished = unfinished


class HeadCompressedError(LedgerError):
    """No readable event anywhere, but a compressed rotated file may hold
    the head: a new chain would reuse its seqs."""

    hint = "decompress the newest rotated file beside the ledger (rotate with logrotate's delaycompress)"


class KeyFileError(LedgerError):
    """A key file that cannot be read or written."""

    hint = 'a key file is {"key_id": "ID", "seed": "base64 of 32 bytes"}, as `ledgertail keygen` writes it'


class LedgerFullError(LedgerError):
    """The head is at seq 2^53−1, the largest a ledger can hold."""


class WriteError(LedgerError):
    """A write or fsync failed midway. The partial line was cut off again;
    ``appended`` lists the events of the call that reached the file whole."""

    hint = "free disk space (or raise the file size limit) and append the rest again"

    def __init__(self, message: str, appended: Sequence[object]) -> None:
        super().__init__(message)
        self.appended: List[object] = list(appended)
