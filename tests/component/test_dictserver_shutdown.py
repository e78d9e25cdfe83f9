"""DictServer on a real Unix socket: shutdown lets requests finish before closing connections."""

from __future__ import annotations

import asyncio
import time

import pytest
from daemons import start_daemon
from dictclient import DictClient

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.dictconn import DictHandler
from chatmaild.dictserver import DictServer


class SlowHandler(DictHandler):
    async def lookup(self, req: dp.Lookup) -> dr.LookupResult:
        await asyncio.sleep(0.3)
        return dr.Found("late but answered")


async def _shutdown_with_request_in_flight(path) -> tuple[bytes, bytes, float]:
    server = DictServer(path, SlowHandler())
    await server.start(0o600)
    reader, writer = await asyncio.open_unix_connection(str(path))
    idle_reader, _idle_writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"H3\t2\t0\t\tauth\nLkey\tuser\n")
    await writer.drain()
    await asyncio.sleep(0.05)  # the request is being handled
    started = time.monotonic()
    await server.close(drain=5)
    took = time.monotonic() - started
    reply = await reader.read()  # everything until the server closed the connection
    idle = await idle_reader.read()
    return reply, idle, took


def test_shutdown_answers_outstanding_requests_then_closes(tmp_path):
    reply, idle, took = asyncio.run(_shutdown_with_request_in_flight(tmp_path / "s"))
    assert reply == b"Olate but answered\n"
    assert idle == b""  # an idle connection is simply closed
    assert 0.2 < took < 2
    assert not (tmp_path / "s").exists()


async def _shutdown_gives_up_after_drain(path) -> float:
    class Stuck(DictHandler):
        async def lookup(self, req: dp.Lookup) -> dr.LookupResult:
            await asyncio.sleep(60)
            return dr.NOT_FOUND

    server = DictServer(path, Stuck())
    await server.start(0o600)
    _reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"Lkey\n")
    await writer.drain()
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await server.close(drain=0.3)
    return time.monotonic() - started


def test_shutdown_does_not_wait_forever(tmp_path):
    assert asyncio.run(_shutdown_gives_up_after_drain(tmp_path / "s")) < 2


def test_sigterm_stops_a_daemon_cleanly_as_root_or_vmail(tmp_path, daemon_user):
    # as vmail (production) the daemon must still be able to remove its own socket
    daemon = start_daemon("doveauth.lastlogin", tmp_path, user=daemon_user)
    with DictClient(daemon.socket, "lastlogin") as c:
        c.send(b"B1\tu\nC1\n")
        assert c.readline() == b"O1\n"  # an empty transaction commits
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    assert f"stopped serving {daemon.socket}" in daemon.log_text()


async def _shutdown_with_a_client_that_stopped_reading(path, grace: float) -> None:
    class Big(DictHandler):
        def lookup(self, req: dp.Lookup) -> dr.LookupResult:
            return dr.Found("v" * 60000)

    server = DictServer(path, Big())
    await server.start(0o600, grace=grace)
    _reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"H3\t2\t0\t\ttest\n" + b"Lkey\tu\n" * 40)  # 2.4 MB of replies, never read
    await writer.drain()
    await asyncio.sleep(0.3)
    await asyncio.wait_for(server.close(drain=0.5), timeout=10)
    writer.close()


@pytest.mark.parametrize("grace", [0, 2])
def test_shutdown_of_a_connection_whose_client_stopped_reading_ends(tmp_path, grace):
    """A hung Dovecot process must not keep the daemon from stopping (or SIGKILL it)."""
    asyncio.run(_shutdown_with_a_client_that_stopped_reading(tmp_path / "s", grace))
