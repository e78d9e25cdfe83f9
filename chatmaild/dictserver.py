"""An asyncio Unix-socket server for Dovecot's dict protocol, shared by every dict daemon.

Peer: Dovecot processes (auth-worker, imap, lmtp) connecting through ``proxy:<socket>:<name>``.
They keep connections open for a long time and may pipeline requests, so one event loop serves
thousands of connections (``chatmaild.dictconn`` handles each). The socket is created with the
configured permissions from the start (never looser, and without touching the process umask),
and a socket file left by a dead process is replaced; a live one is not. On shutdown the
listening socket goes to a keeper (``chatmaild.handoff``) so that a restarting daemon's
successor takes it over and no lookup fails in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import stat
import time
from pathlib import Path

from . import handoff
from .dictconn import DictConnection, DictHandler

log = logging.getLogger(__name__)

# On shutdown: how long connections get to finish (under supervisord's default stopwaitsecs
# of 10), and how quiet a connection must be before it is closed.
DRAIN_SECONDS = 8.0
QUIET_SECONDS = 0.05
# How long a socket found in use may take to be freed (a keeper giving up) before we refuse.
IN_USE_WAIT = 3.0


class SocketInUse(RuntimeError):
    """The socket path is served by another process, or is not a socket."""


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead process; refuse to take over anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket: refusing to replace it")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:  # nobody listens: left over from a dead process
            path.unlink()
            log.info("removed stale socket %s", path)
            return
        except OSError as exc:
            raise SocketInUse(
                f"{path}: cannot check whether it is in use: {exc.strerror}"
            ) from None
    raise SocketInUse(f"{path}: another process is serving on this socket")


def _take_socket(
    path: Path, mode: int, group: str | None
) -> tuple[socket.socket, list[socket.socket], bool]:
    """(listener, connections, adopted?): a predecessor's sockets, else a new listener.

    A socket found in use may be held by a keeper that is just starting or just giving up:
    ask it again for a moment before refusing.
    """
    deadline = time.monotonic() + IN_USE_WAIT
    while True:
        adopted = handoff.adopt(path)
        if adopted is not None:
            return adopted[0], adopted[1], True
        try:
            _remove_stale_socket(path)
            return handoff.bind_private(path, mode, group), [], False
        except SocketInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _raise_fd_limit() -> None:
    # thousands of Dovecot connections need more than the usual soft limit of 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class DictServer:
    """A listening dict socket and the connections it accepted."""

    def __init__(self, path: Path, handler: DictHandler) -> None:
        self.path = path
        self.handler = handler
        self.connections: set[DictConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket | None = None
        self._grace = 0.0

    async def start(self, mode: int = 0o660, group: str | None = None, grace: float = 0) -> None:
        """Listen on the sockets a stopped predecessor left behind, or on a new one.

        ``grace``: after ``close``, how long a keeper holds the sockets for a successor.
        """
        _raise_fd_limit()
        self._grace = grace
        listener, conns, adopted = await asyncio.to_thread(_take_socket, self.path, mode, group)
        if adopted:
            os.chmod(self.path, mode)
            if group is not None:
                os.chown(self.path, -1, handoff.group_id(group))
            log.info(
                "took over the socket %s and %d connections from the previous process",
                self.path,
                len(conns),
            )
        self._listener = listener
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._connection, sock=listener, backlog=4096)
        for sock in conns:
            await loop.connect_accepted_socket(self._connection, sock)

    def _connection(self) -> DictConnection:
        return DictConnection(self.handler, self.connections)

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop listening, let connections finish what they asked, then let them go.

        With a keeper (a grace period), connections go to it as soon as every request on them
        is answered, and a successor carries on with them: nothing is closed under Dovecot's
        feet. Without one, a connection is closed once it has been quiet for a moment. When
        ``drain`` seconds are up the rest are closed, also those whose client stopped reading:
        Dovecot logs the key of a request that a closed connection never answered, and a
        passdb key may hold a password. (Since Python 3.12 ``wait_closed()`` also waits for
        every connection.)
        """
        if self._server is None:
            return
        keeper = None
        if self._listener is not None:
            keeper = handoff.spawn_keeper(self._listener, self.path, self._grace)
        self._server.close()
        deadline = time.monotonic() + drain
        while self.connections:
            if time.monotonic() >= deadline:
                for conn in list(self.connections):
                    conn.abort()
                    self.connections.discard(conn)
                break
            if keeper is not None and self._pass_on(keeper) is False:
                log.error("the socket keeper is gone: closing connections instead")
                keeper = None
            if keeper is None:
                for conn in list(self.connections):
                    if conn.idle(QUIET_SECONDS):
                        conn.close()
                        self.connections.discard(conn)
            await asyncio.sleep(0.02)
        await self._server.wait_closed()
        if keeper is not None:
            keeper.done()
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _pass_on(self, keeper: handoff.Keeper) -> bool | None:
        """Give the keeper the connections that are settled; Keeper.give's last answer."""
        settled = []
        for conn in list(self.connections):
            conn.hold()  # read no new request, but finish a half-received line
            if conn.settled():
                settled.append(conn)
        result: bool | None = True
        for i in range(0, len(settled), handoff.SCM_MAX_FD):
            batch = settled[i : i + handoff.SCM_MAX_FD]
            dups = [conn.duplicate() for conn in batch]
            try:
                result = keeper.give(dups)
            finally:
                for dup in dups:
                    dup.close()
            if not result:
                return result  # busy: the rest in the next round; gone: the caller closes
            for conn in batch:
                conn.let_go()  # the connection lives on with the keeper
                self.connections.discard(conn)
        return result
