"""Where filtermail keeps a message between its DATA and its reinjection.

A message stays in memory up to ``threshold`` bytes; beyond, it goes to an unlinked temporary
file in filtermail's private spool directory (mode 0700, removed at exit), so 64 large messages
in flight do not mean 64 copies in the process's memory. The file is gone when it is closed,
and with it the message, whatever the outcome: filtermail never queues, Postfix does.

Appends happen on the event loop as DATA arrives: pieces of at most 64 KiB to a file in the page
cache take microseconds, less than handing each to a thread. Reading a large message back
(checks, reinjection) happens in threads (``read`` is blocking).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

DEFAULT_THRESHOLD = 64 * 1024
READ_SIZE = 64 * 1024  # per piece sent on: 64 messages streaming at once hold 64 of these
# per piece read from a file, each read a hand-off to a thread (about as costly as reading
# 100 KiB from the page cache): the reinjection streams at most 16 messages at once
FILE_READ_SIZE = 256 * 1024


class Spool:
    """The (dot-stuffed) DATA of one message: ``write`` pieces, then ``read`` it back."""

    def __init__(self, directory: Path, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.directory = directory
        self.threshold = threshold
        self.size = 0
        self._memory: io.BytesIO | None = io.BytesIO()
        self._file: BinaryIO | None = None

    @property
    def in_memory(self) -> bool:
        return self._file is None

    def write(self, piece: bytes) -> None:
        self.size += len(piece)
        if self._memory is not None:
            self._memory.write(piece)
            if self.size <= self.threshold:
                return
            self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 (closed in close())
            self._file.write(self._memory.getbuffer())
            self._memory = None
            return
        self._file.write(piece)  # type: ignore[union-attr]

    def read(self, offset: int = 0, size: int = -1) -> bytes:
        """``size`` bytes (all with -1) from ``offset``; blocking when the spool is a file."""
        if self._memory is not None:
            with self._memory.getbuffer() as view:  # released at once: the BytesIO stays usable
                end = len(view) if size < 0 else offset + size
                return bytes(view[offset:end])
        assert self._file is not None
        self._file.flush()
        return os.pread(self._file.fileno(), self.size - offset if size < 0 else size, offset)

    async def pieces(self, offset: int, read_in_thread) -> AsyncIterator[bytes]:
        """The spool from ``offset`` to its end in pieces; ``read_in_thread(fn, *args)`` awaits
        a blocking call (only used when the spool is a file)."""
        while offset < self.size:
            if self.in_memory:
                piece = self.read(offset, READ_SIZE)
            else:
                piece = await read_in_thread(self.read, offset, FILE_READ_SIZE)
            if not piece:
                return
            offset += len(piece)
            yield piece

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._memory = None
        self._file = None


def private_directory(parent: str | None = None) -> Path:
    """A new directory only this process's user can enter, for spool files."""
    return Path(tempfile.mkdtemp(prefix="filtermail-", dir=parent))
