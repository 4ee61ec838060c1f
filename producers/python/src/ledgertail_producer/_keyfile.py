"""Key files, the format ``ledgertail keygen`` writes (contract §4): a JSON
object ``{"key_id": ID, "seed": base64 of the 32-byte Ed25519 seed}`` in a
file of mode 0600, never overwritten."""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Optional, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._errors import KeyFileError
from ._seal import valid_key_id

PathLike = Union[str, "os.PathLike[str]"]


class KeyFile:
    """A producer's signing key and its key id. The seed is never shown in
    ``repr`` or in an error."""

    __slots__ = ("key_id", "private_key")

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        if not valid_key_id(key_id):
            raise KeyFileError(
                f"key id {key_id!r} must be 1 to 128 bytes with no control character"
            )
        self.key_id = key_id
        self.private_key = private_key

    def __repr__(self) -> str:
        return f"KeyFile(key_id={self.key_id!r})"

    @classmethod
    def generate(cls, key_id: str) -> "KeyFile":
        """A new random key."""
        return cls(key_id, Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: PathLike) -> "KeyFile":
        """Reads a key file made by ``ledgertail keygen`` or :func:`keygen`.
        Warns (``UserWarning``) when other users may read it."""
        where = os.fspath(path)

        def bad(reason: str) -> KeyFileError:
            return KeyFileError(f"key file {where}: {reason}")

        try:
            with open(where, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                text = f.read().decode("utf-8")
        except OSError as e:
            raise bad(e.strerror or str(e)) from None
        except UnicodeDecodeError:
            raise bad("not UTF-8 text") from None
        try:
            parsed = json.loads(text)
        except ValueError as e:
            raise bad(f"not a key file: {e}") from None
        if not isinstance(parsed, dict) or set(parsed) != {"key_id", "seed"}:
            raise bad('not a key file: it must hold exactly "key_id" and "seed"')
        key_id, seed_text = parsed["key_id"], parsed["seed"]
        if not valid_key_id(key_id):
            raise bad("key_id must be 1 to 128 bytes with no control character")
        try:
            seed = base64.b64decode(str(seed_text).strip(), validate=True)
        except (binascii.Error, ValueError):
            seed = b""
        if len(seed) != 32:
            raise bad("seed is not base64 of 32 bytes")
        if stat.S_IMODE(mode) & 0o077:
            warnings.warn(
                f"key file {where} is readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it",
                stacklevel=2,
            )
        return cls(key_id, Ed25519PrivateKey.from_private_bytes(seed))

    def public_base64(self) -> str:
        """The public key, base64: the value of its ``[keys]`` line."""
        raw = self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def trust_line(self) -> str:
        """The line to add under the sidecar's ``[keys]``: ``ID = "base64"``."""
        bare = all(c.isascii() and (c.isalnum() or c in "-_") for c in self.key_id)
        name = self.key_id if bare else json.dumps(self.key_id, ensure_ascii=False)
        return f'{name} = "{self.public_base64()}"'

    def save_new(self, path: PathLike) -> None:
        """Writes the key file with mode 0600; an existing file is never
        overwritten (:class:`KeyFileError`)."""
        where = os.fspath(path)
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        body = json.dumps(
            {"key_id": self.key_id, "seed": base64.b64encode(seed).decode()},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        try:
            fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(
                f"key file {where} exists already: a key file is never overwritten"
            ) from None
        except OSError as e:
            raise KeyFileError(f"key file {where}: {e.strerror or e}") from None
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            data = (body + "\n").encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            os.unlink(where)
            raise KeyFileError(f"key file {where}: {e.strerror or e}") from None
        os.close(fd)


def keygen(path: PathLike, key_id: Optional[str] = None) -> KeyFile:
    """``ledgertail keygen`` in Python: a new key in a new file of mode
    0600 (never overwriting one); ``key_id`` defaults to the file's stem."""
    key = KeyFile.generate(key_id if key_id is not None else Path(path).stem)
    key.save_new(path)
    return key
