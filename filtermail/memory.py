"""glibc's malloc, tuned for filtermail's large messages: no page-fault churn while they come,
their memory given back once they are gone.

A message of 1 MB is copied a few times while it is checked (read from the spool, split into
its parts, decoded from base64). glibc serves a block above its mmap threshold with a fresh
mapping and unmaps it when it is freed, so every such copy faults its pages in again: with the
threshold at 128 KiB that was half of filtermail's CPU per 1 MB message, in the kernel. With
``MMAP_THRESHOLD`` above the common message sizes those copies come from the heap and its freed
blocks serve the next message. glibc would also raise its threshold by itself after each large
free (mallopt(3)); a fixed one keeps a 30 MB message its own mapping, unmapped when it is done.

Memory the heap keeps after a burst of large messages goes back with ``release`` (``malloc_trim``,
which also returns free pages inside the heap and the threads' arenas); the handler calls it
once large messages have stopped coming for a moment. Nothing here if the C library is not
glibc: its own policy applies. No file, socket or process of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 4 * 1024 * 1024  # above the messages chat clients send (attachments: a few MB)
# the heap's free top is kept for the next message (giving it back at each free would fault its
# pages in again at once): ``release`` returns it when the burst is over
TRIM_THRESHOLD = 32 * 1024 * 1024
# The event loop, the check threads and asyncio's default pool would each get an arena, each
# keeping its own free memory; two arenas are enough for two check threads and the loop.
ARENA_MAX = 2


class Malloc:
    """``configure()`` once at start; ``release()`` (blocking, short) when a burst is over."""

    def __init__(self) -> None:
        try:
            self._libc: ctypes.CDLL | None = ctypes.CDLL(
                ctypes.util.find_library("c") or "libc.so.6"
            )
            self._libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            self._libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc
            self._libc = None

    @property
    def tunable(self) -> bool:
        return self._libc is not None

    def configure(self) -> None:
        if self._libc is None:
            return
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        ):
            if not self._libc.mallopt(param, value):
                log.debug("mallopt(%d, %d) refused", param, value)

    def release(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)
