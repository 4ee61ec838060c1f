"""The writer: seals events and appends them to a ledger under the same
exclusive lock as every other writer (``flock(2)`` on the live file, which
``ledgertail append`` and the Rust ``Writer`` take too), one ``write`` per
line, and ``fsync`` before an append returns."""

from __future__ import annotations

import datetime
import fcntl
import os
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ._errors import LedgerFullError, PayloadError, WriteError
from ._head import find_head
from ._keyfile import KeyFile, PathLike
from ._seal import (
    DEFAULT_MAX_LINE_BYTES,
    MAX_SAFE_INTEGER,
    Draft,
    Head,
    draft,
    kind,
    seal,
)


class Appended(NamedTuple):
    """One appended event: its seq and its hash (64 hex digits)."""

    seq: int
    hash: str


def _now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Writer:
    """Appends sealed events to the ledger whose live file is ``path``.

    ``key`` (a :class:`KeyFile`) signs every event. ``max_line_bytes`` is
    the sidecar's line limit for this ledger: a longer line is refused
    here rather than written. Several writers, in one process or many, in
    any language that takes the lock, make one valid chain.

    >>> w = Writer("ledger.jsonl")                      # doctest: +SKIP
    >>> w.append("order.created", {"order": 42})        # doctest: +SKIP
    Appended(seq=0, hash='…')
    """

    def __init__(
        self,
        path: PathLike,
        key: Optional[KeyFile] = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        fsync: bool = True,
    ) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.max_line_bytes = max_line_bytes
        self._fsync = fsync
        # The head we wrote last, valid while the file is (dev, ino, size).
        self._cached: Optional[Tuple[int, int, int, Head]] = None

    def __repr__(self) -> str:
        return f"Writer({self.path!r}, key={self.key!r})"

    def append(
        self,
        type: str,
        payload: Any,
        *,
        id: Optional[str] = None,
        extensions: Optional[Mapping[str, Any]] = None,
    ) -> Appended:
        """Seals ``payload`` (any JSON value: dict, list, str, int, float,
        bool, None) as the next event of type ``type`` and appends it.
        ``id`` is the producer's own identifier (indexed in the mirror);
        ``extensions`` are extra top-level members, covered by the hash."""
        ids = None if id is None else [id]
        return self.append_batch(type, [payload], ids=ids, extensions=extensions)[0]

    def append_batch(
        self,
        type: str,
        payloads: Sequence[Any],
        *,
        ids: Optional[Sequence[Optional[str]]] = None,
        extensions: Optional[Mapping[str, Any]] = None,
    ) -> List[Appended]:
        """Seals and appends several events under one lock and one fsync
        (each line still gets its own ``write``). Every event is checked
        before anything is written: one that cannot be sealed refuses the
        whole batch (:class:`PayloadError` with its ``index``)."""
        if ids is not None and len(ids) != len(payloads):
            raise PayloadError(
                f"{len(ids)} ids for {len(payloads)} payloads: give one id (or None) per payload"
            )
        shared = kind(type, extensions)
        drafts = []
        for i, payload in enumerate(payloads):
            try:
                drafts.append(draft(shared, payload, None if ids is None else ids[i]))
            except PayloadError as e:
                if len(payloads) == 1:
                    raise
                raise PayloadError(str(e.args[0]), index=i, hint=e.hint) from None
        appended: List[Appended] = []
        while len(appended) < len(drafts):
            self._append_to_live(drafts[len(appended) :], appended, len(appended))
        return appended

    def _open_locked(self) -> int:
        """The live file, open for appending and locked; the lock is on the
        file the path names now (a rotation may rename the one opened)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                now = os.stat(self.path)
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
            os.close(fd)  # rotated between open and lock: take the new file

    def _still_live(self, dev: int, ino: int) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (dev, ino)

    def _append_to_live(
        self, drafts: Sequence[Draft], appended: List[Appended], offset: int
    ) -> None:
        fd = self._open_locked()
        try:
            st = os.fstat(fd)
            length = st.st_size
            cached = self._cached
            if cached is not None and cached[:3] == (st.st_dev, st.st_ino, length):
                head: Optional[Head] = cached[3]
            else:
                head = find_head(self.path, fd, length, self.max_line_bytes)
            self._cached = None
            lines = self._seal_all(drafts, head, offset)
            before = len(appended)
            for i, (line, event) in enumerate(lines):
                if i > 0 and not self._still_live(st.st_dev, st.st_ino):
                    break  # renamed under us: the rest goes to the new live file
                try:
                    written = os.write(fd, line)
                    if written != len(line):
                        raise OSError(f"only {written} of {len(line)} bytes written")
                except OSError as e:
                    raise self._cut_back(fd, length, appended, before, e) from e
                length += len(line)
                head = Head(event.seq, event.hash)
                appended.append(event)
            if self._fsync:
                try:
                    os.fdatasync(fd)
                except OSError as e:
                    n = len(appended) - before
                    raise WriteError(
                        f"{self.path}: {n} event(s) were written (the file is {length} bytes) but fsync failed, so they may not be durable: {e}",
                        appended,
                    ) from e
            if head is not None:
                self._cached = (st.st_dev, st.st_ino, length, head)
        finally:
            os.close(fd)  # releases the lock

    def _seal_all(
        self, drafts: Sequence[Draft], head: Optional[Head], offset: int
    ) -> List[Tuple[bytes, Appended]]:
        signer = None if self.key is None else (self.key.key_id, self.key.private_key)
        out = []
        for i, d in enumerate(drafts):
            seq, prev = (0, None) if head is None else (head.seq + 1, head.hash)
            if seq > MAX_SAFE_INTEGER:
                raise LedgerFullError(
                    f"{self.path}: the head is at seq {seq - 1}, the largest a ledger can hold"
                )
            line, digest = seal(d, seq, prev, _now(), signer)
            if len(line) - 1 > self.max_line_bytes:
                raise PayloadError(
                    f"its line would be {len(line) - 1} bytes, over the sidecar's line limit of {self.max_line_bytes} (max_line_bytes)",
                    index=offset + i if offset or len(drafts) > 1 else None,
                )
            event = Appended(seq, digest)
            out.append((line, event))
            head = Head(seq, digest)
        return out

    def _cut_back(
        self,
        fd: int,
        length: int,
        appended: List[Appended],
        before: int,
        error: OSError,
    ) -> WriteError:
        whole = appended[before:]
        kept = (
            f"{len(whole)} event(s) of this batch reached the file whole (seq {whole[0].seq}..={whole[-1].seq}), then"
            if whole
            else "no event of this batch reached the file:"
        )
        try:
            os.ftruncate(fd, length)
            os.fdatasync(fd)
            what = f"{kept} a line could not be written ({error}); its partial bytes were removed (the file ends at its last complete line, {length} bytes)"
        except OSError as e:
            what = f"{kept} a line could not be written ({error}), and removing its partial bytes failed too ({e}): cut the file back to {length} bytes (`truncate -s {length}`) before appending again"
        return WriteError(f"{self.path}: {what}", appended)
