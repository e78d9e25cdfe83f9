"""filtermail.memory: glibc's malloc tuned once, and large blocks given back on request."""

from __future__ import annotations

from filtermail.memory import Malloc


def test_configure_and_release_work_or_do_nothing():
    malloc = Malloc()
    malloc.configure()
    block = bytearray(8 << 20)  # above the mmap threshold: its own mapping
    del block
    malloc.release()
    assert malloc.tunable in (True, False)
