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
import signal
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


def _remove_stale_socket_waiting(path: Path) -> None:
    deadline = time.monotonic() + IN_USE_WAIT
    while True:
        try:
            _remove_stale_socket(path)
            return
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
        adopted = await asyncio.to_thread(handoff.adopt, self.path)
        if adopted is not None:
            listener, conns = adopted
            os.chmod(self.path, mode)
            if group is not None:
                os.chown(self.path, -1, handoff.group_id(group))
            log.info(
                "took over the socket %s and %d connections from the previous process",
                self.path,
                len(conns),
            )
        else:
            await asyncio.to_thread(_remove_stale_socket_waiting, self.path)
            listener, conns = handoff.bind_private(self.path, mode, group), []
        self._listener = listener
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._connection, sock=listener, backlog=4096)
        for sock in conns:
            await loop.connect_accepted_socket(self._connection, sock)

    def _connection(self) -> DictConnection:
        return DictConnection(self.handler, self.connections)

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop listening, let connections finish what they asked, then let them go.

        With a keeper (a grace period), each connection goes to it once every request on it
        is answered, and a successor carries on with it: nothing is ever closed under
        Dovecot's feet. Without one, a connection is closed once it has been quiet for a
        moment. Either way, when ``drain`` seconds are up the rest are closed: Dovecot logs
        the key of a request that a closed connection never answered, and a passdb key may
        hold a password. (Closing them all also matters because since Python 3.12
        ``wait_closed()`` waits for every one.)
        """
        if self._server is None:
            return
        keeper = None
        if self._listener is not None:
            keeper = handoff.spawn_keeper(self._listener, self.path, self._grace)
        self._server.close()
        deadline = time.monotonic() + drain
        while self.connections:
            late = time.monotonic() >= deadline
            for conn in list(self.connections):
                if late:
                    conn.close()
                elif keeper is not None:
                    self._pass_on(conn, keeper)
                elif conn.idle(QUIET_SECONDS):
                    conn.close()
            await asyncio.sleep(0.02)
        await self._server.wait_closed()
        if keeper is not None:
            keeper.done()
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _pass_on(self, conn: DictConnection, keeper: handoff.Keeper) -> None:
        conn.hold()  # read no new request, but finish a half-received line
        if not conn.settled():
            return
        sock = conn.detach()
        if sock is not None:
            with sock:
                if not keeper.give(sock):
                    log.error("the socket keeper is gone: closing a connection")

    async def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then close."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping: finishing requests in progress")
        await self.close()
        log.info("stopped serving %s", self.path)
