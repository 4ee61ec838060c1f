"""Finding a ledger's head as ``ledgertail append`` does (contract §4): the
last well-formed event with a correct hash, read *back* from the end of the
live file (never the whole ledger), or, when the live file holds none, of
the newest rotated file (the rotated files are the regular files beside it
named ``<name>.<anything>``, ordered by the seq of their first event;
compressed ones are never read)."""

from __future__ import annotations

import os
import stat
from typing import Iterator, List, Optional, Tuple

from ._errors import HeadCompressedError, UnfinishedLineError
from ._seal import Head, judge_line

_BLOCK = 64 * 1024
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")


def _lines_backward(fd: int, length: int, limit: int) -> Iterator[Optional[bytes]]:
    """The complete lines of the first ``length`` bytes (which end in LF),
    last first; a line longer than ``limit`` comes as ``None``, unkept."""
    if length == 0:
        return
    cursor = length - 1  # bytes before it are unread; at it, the final LF
    parts: List[bytes] = []
    kept = 0
    too_long = False
    while cursor > 0:
        lo = max(0, cursor - _BLOCK)
        block = os.pread(fd, cursor - lo, lo)
        if len(block) != cursor - lo:
            raise OSError(f"short read at offset {lo}: the file shrank")
        j = len(block)
        while True:
            i = block.rfind(b"\n", 0, j)
            piece = block[i + 1 : j]
            if not too_long:
                parts.append(piece)
                kept += len(piece)
                too_long = kept > limit
            if i < 0:
                break
            yield None if too_long else b"".join(reversed(parts))
            parts, kept, too_long, j = [], 0, False, i
        cursor = lo
    yield None if too_long else b"".join(reversed(parts))


def unfinished_bytes(fd: int, length: int) -> int:
    """Bytes after the last LF of the first ``length`` bytes."""
    end = length
    while end > 0:
        lo = max(0, end - _BLOCK)
        i = os.pread(fd, end - lo, lo).rfind(b"\n")
        if i >= 0:
            return length - (lo + i + 1)
        end = lo
    return length


def last_event(fd: int, length: int, limit: int) -> Optional[Head]:
    for line in _lines_backward(fd, length, limit):
        if line is not None:
            head = judge_line(line)
            if head is not None:
                return head
    return None


def first_event(fd: int, limit: int) -> Optional[Head]:
    """The first event of a file, read forward (a rotated file's order)."""
    offset, pending = 0, b""
    while True:
        block = os.pread(fd, _BLOCK, offset)
        if not block:
            return None
        offset += len(block)
        pending += block
        while True:
            i = pending.find(b"\n")
            if i < 0:
                if len(pending) > limit:  # a long line: skip to its end
                    pending = b""
                    while True:
                        block = os.pread(fd, _BLOCK, offset)
                        if not block:
                            return None
                        offset += len(block)
                        k = block.find(b"\n")
                        if k >= 0:
                            pending = block[k + 1 :]
                            break
                    continue
                break
            line, pending = pending[:i], pending[i + 1 :]
            if len(line) <= limit:
                head = judge_line(line)
                if head is not None:
                    return head


def _siblings(path: str) -> Tuple[List[str], List[Tuple[str, float]]]:
    """The rotated files beside ``path`` (regular files, not symlinks) and
    the compressed ones (with their modification times)."""
    folder, name = os.path.split(path)
    folder = folder or "."
    rotated, compressed = [], []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return [], []
    for other in names:
        if not other.startswith(name + ".") or other == name:
            continue
        full = os.path.join(folder, other)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if other.lower().endswith(_COMPRESSED):
            compressed.append((full, st.st_mtime))
        else:
            rotated.append(full)
    return rotated, compressed


def find_head(path: str, fd: int, length: int, limit: int) -> Optional[Head]:
    """The head of the ledger whose live file ``path`` is open (and locked)
    as ``fd`` with ``length`` bytes. Refuses a live file ending in an
    unfinished line."""
    if length > 0 and os.pread(fd, 1, length - 1) != b"\n":
        raise UnfinishedLineError(path, unfinished_bytes(fd, length))
    head = last_event(fd, length, limit)
    if head is not None:
        return head
    rotated, compressed = _siblings(path)
    ordered = []
    for other in rotated:
        try:
            rfd = os.open(other, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # rotated away meanwhile, or unreadable
        try:
            first = first_event(rfd, limit)
            if first is not None:
                ordered.append((first.seq, other))
        finally:
            os.close(rfd)
    for _, other in sorted(ordered, reverse=True):
        try:
            rfd = os.open(other, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            size = os.fstat(rfd).st_size
            # A rotated file's own unfinished tail is not a line.
            complete = size - unfinished_bytes(rfd, size)
            head = last_event(rfd, complete, limit)
        finally:
            os.close(rfd)
        if head is not None:
            return head
    if compressed:
        newest = max(compressed, key=lambda c: c[1])[0]
        raise HeadCompressedError(
            f"{path}: the live file holds no event and no uncompressed rotated file does, but {newest} is compressed: the head may be in it, and a new chain here would reuse its seqs"
        )
    return None
