"""filtermail.spool: a message stays in memory while small, then in an unlinked file."""

from __future__ import annotations

import asyncio
import os

from filtermail.spool import Spool, private_directory


async def _thread(fn, *args):
    return fn(*args)


def collect(spool: Spool, offset: int) -> bytes:
    async def run() -> bytes:
        return b"".join([piece async for piece in spool.pieces(offset, _thread)])

    return asyncio.run(run())


def test_a_small_message_stays_in_memory(tmp_path):
    spool = Spool(tmp_path, threshold=100)
    spool.write(b"abc")
    spool.write(b"def")
    assert spool.in_memory
    assert (spool.read(), spool.read(2, 3), spool.size) == (b"abcdef", b"cde", 6)
    assert collect(spool, 1) == b"bcdef"
    spool.close()


def test_a_large_message_goes_to_an_unlinked_file(tmp_path):
    spool = Spool(tmp_path, threshold=100)
    data = os.urandom(300_000)
    for at in range(0, len(data), 1000):
        spool.write(data[at : at + 1000])
    assert not spool.in_memory
    assert list(tmp_path.iterdir()) == []  # nothing to leave behind
    assert spool.read() == data
    assert spool.read(5, 10) == data[5:15]
    assert collect(spool, 7) == data[7:]
    spool.close()


def test_the_spool_directory_is_private():
    directory = private_directory()
    try:
        assert directory.stat().st_mode & 0o777 == 0o700
    finally:
        directory.rmdir()
