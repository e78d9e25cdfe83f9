"""A restarting dict daemon keeps its socket: lookups sent in between are answered, none fail.

Dovecot logs the key of a failed lookup, and doveauth's creating key holds a password, so a
restart must never make a lookup fail (see chatmaild.handoff).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time

import pytest
from daemons import start_daemon
from dictclient import DictClient

from chatmaild import handoff
from chatmaild.dictconn import DictHandler
from chatmaild.dictserver import DictServer

ADDR = "abcdefghi@example.org"
PASSWORD = "correct horse battery"


def _wait_gone(path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_lookups_sent_between_two_daemons_are_answered_by_the_second(tmp_path, daemon_user):
    grace = ("--restart-grace", "10")  # the default of the daemons
    first = start_daemon("doveauth", tmp_path, "", *grace, user=daemon_user)
    kept = DictClient(first.socket)  # connected to the first daemon, and kept open
    assert kept.lookup(f"shared/passdb/{ADDR}", ADDR) == b'O{"noauthenticate": "y"}\n'
    assert first.stop() == 0
    # no daemon runs now: the old connection still takes requests, and new connects succeed
    kept.send(f'Lshared/passdb/{PASSWORD}"{ADDR}\t{ADDR}\n'.encode())
    new = DictClient(first.socket)
    other = "bcdefghij@example.org"
    new.send(f'Lshared/passdb/{PASSWORD}"{other}\t{other}\n'.encode())
    second = start_daemon("doveauth", tmp_path, "", "--restart-grace", "0", user=daemon_user)
    try:
        assert kept.readline().startswith(b'O{"password": "{SHA512-CRYPT}')
        assert new.readline().startswith(b'O{"password": "{SHA512-CRYPT}')
        assert "took over the socket" in second.log_text()
        assert "and 1 connections" in second.log_text()
        assert (second.mailboxes / ADDR / "password").exists()
        assert (second.mailboxes / other / "password").exists()
    finally:
        kept.close()
        new.close()
        second.stop()


def test_socket_is_removed_when_no_successor_comes(tmp_path, daemon_user):
    daemon = start_daemon("doveauth", tmp_path, "", "--restart-grace", "0.5", user=daemon_user)
    assert daemon.stop() == 0
    with DictClient(daemon.socket):
        pass  # still accepted, by the keeper
    assert _wait_gone(daemon.socket, 10)
    assert _wait_gone(handoff.handoff_path(daemon.socket), 2)


def test_restart_grace_zero_removes_the_socket_at_once(tmp_path):
    daemon = start_daemon("doveauth", tmp_path, "", "--restart-grace", "0")
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    assert not handoff.handoff_path(daemon.socket).exists()


def test_bad_restart_grace_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="restart-grace"):
        start_daemon("doveauth", tmp_path, "", "--restart-grace", "soon")


def test_handoff_socket_is_private(tmp_path):
    daemon = start_daemon("doveauth", tmp_path, "", "--restart-grace", "5")
    daemon.stop()
    hpath = handoff.handoff_path(daemon.socket)
    deadline = time.monotonic() + 5
    while not hpath.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert stat.S_IMODE(hpath.stat().st_mode) == 0o600
    finally:
        adopted = handoff.adopt(daemon.socket)  # take it, so the keeper exits now
        assert adopted is not None
        for sock in (adopted[0], *adopted[1]):
            sock.close()


def test_socket_is_created_without_touching_the_process_umask(tmp_path, monkeypatch):
    """The umask is per process: changing it races with every thread that creates files."""

    def forbidden(mask: int) -> int:
        raise AssertionError("os.umask called while a daemon may have threads")

    monkeypatch.setattr(os, "umask", forbidden)

    async def start_and_stop() -> int:
        server = DictServer(tmp_path / "s", DictHandler())
        await server.start(0o640)
        mode = stat.S_IMODE((tmp_path / "s").stat().st_mode)
        await server.close()
        return mode

    assert asyncio.run(start_and_stop()) == 0o640
    assert not (tmp_path / "s").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no bind directory left behind


def test_keeper_passes_on_the_very_same_listening_socket(tmp_path):
    listener = handoff.bind_private(tmp_path / "s", 0o600)
    listener.listen(8)
    keeper = handoff.spawn_keeper(listener, tmp_path / "s", grace=5)
    assert keeper is not None
    listener.close()
    try:
        deadline = time.monotonic() + 5
        while not handoff.handoff_path(tmp_path / "s").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        keeper.done()  # the "predecessor" has nothing more to give
        adopted = handoff.adopt(tmp_path / "s")
        assert adopted is not None
        listener, conns = adopted
        assert conns == []
        with listener, socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "s"))
            conn, _ = listener.accept()  # the same listening socket, passed on
            conn.close()
        assert keeper.proc.wait(timeout=5) == 0
    finally:
        if keeper.proc.poll() is None:
            keeper.proc.kill()


def test_hundreds_of_connections_are_carried_over(tmp_path):
    """More connections than one message can carry (SCM_MAX_FD): all reach the successor."""
    first = start_daemon("doveauth", tmp_path, "", "--restart-grace", "10")
    clients = [DictClient(first.socket) for _ in range(handoff.SCM_MAX_FD + 50)]
    for c in clients:
        assert c.lookup(f"shared/passdb/{ADDR}", ADDR) == b'O{"noauthenticate": "y"}\n'
    assert first.stop() == 0
    second = start_daemon("doveauth", tmp_path, "", "--restart-grace", "0")
    try:
        for c in clients:
            assert c.lookup(f"shared/userdb/{ADDR}", ADDR) == b"N\n"
        assert f"and {len(clients)} connections" in second.log_text()
    finally:
        for c in clients:
            c.close()
        second.stop()
