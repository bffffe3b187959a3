"""Message bytes held in memory while small, in a temporary file past a threshold.

A 25 MB message read over SMTP must not cost 25 MB of memory per session until its
commit: ten at once would be a quarter of a gigabyte. A `Spool` is written once (DATA
as it arrives; its SHA-256 computed on the way once it is in a file, else when asked)
and then read back in chunks by whoever stores it, as often as needed (a failed group
commit retries message by message).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from crmdrop.mail.headers import find_blank_line

CHUNK = 1024 * 1024  # read back in pieces of this size
# Header blocks are short; a message that is all header is read whole to find its end.
_HEADER_STEP = 64 * 1024


class Spool:
    """Bytes written once, kept in memory up to `threshold`, then in a temporary file."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._file: BinaryIO = io.BytesIO()
        # Hashed as written once on disk; in memory, when first asked for (by the commit,
        # in its thread: off the event loop, and hashlib runs without the GIL).
        self._hash = hashlib.sha256()
        self._digest: str | None = None
        self.size = 0
        self.on_disk = False

    @classmethod
    def of(cls, data: bytes) -> Spool:
        """The bytes already in hand (HTTP, IMAP, a pipe), in memory, without a copy."""
        spool = cls(threshold=max(len(data), 1))
        spool._file = io.BytesIO(data)
        spool.size = len(data)
        return spool

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self._digest = None
        if not self.on_disk and self.size + len(view) > self.threshold:
            self._roll_over()
        if self.on_disk:
            self._hash.update(view)
        self._file.write(view)
        self.size += len(view)

    def _roll_over(self) -> None:
        """Move what is in memory to a temporary file (deleted when closed)."""
        disk = tempfile.TemporaryFile(prefix="crmdrop-data-")  # noqa: SIM115 - closed by close()
        assert isinstance(self._file, io.BytesIO)
        with self._file.getbuffer() as held:
            self._hash.update(held)
            disk.write(held)
        self._file.close()
        self._file = disk
        self.on_disk = True

    def __len__(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        """The SHA-256 of every byte written (hex)."""
        if self._digest is None:
            if self.on_disk:
                self._digest = self._hash.hexdigest()
            else:
                assert isinstance(self._file, io.BytesIO)
                with self._file.getbuffer() as held:
                    self._digest = hashlib.sha256(held).hexdigest()
        return self._digest

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The bytes from the start, `size` at a time."""
        self._file.seek(0)
        while chunk := self._file.read(size):
            yield chunk

    def getvalue(self) -> bytes:
        """All the bytes at once: only where a caller needs them whole (DKIM)."""
        if isinstance(self._file, io.BytesIO):
            return self._file.getvalue()
        self._file.seek(0)
        return self._file.read()

    def head(self) -> bytes:
        """The header block (up to and with the first empty line), not the body."""
        if isinstance(self._file, io.BytesIO):
            data = self._file.getvalue()  # at most `threshold` bytes, shared, not copied
            return data[: header_end(data)]
        read = bytearray()
        self._file.seek(0)
        while chunk := self._file.read(_HEADER_STEP):
            searched = max(0, len(read) - 3)  # a mark may straddle two reads
            read += chunk
            end = header_end(read, searched)
            if end < len(read):
                return bytes(read[:end])
        return bytes(read)

    def close(self) -> None:
        self._file.close()


def header_end(data: bytes | bytearray, start: int = 0) -> int:
    """Just after the first empty line (as `mail.headers` finds it), else the end."""
    found = find_blank_line(data, start)
    return found[1] if found is not None else len(data)
