"""An asyncio Unix-socket server for Dovecot's dict protocol, shared by every dict daemon.

Peer: Dovecot processes (auth-worker, imap, lmtp) connecting through ``proxy:<socket>:<name>``.
They keep connections open for a long time and may pipeline requests, so one event loop serves
thousands of connections (``chatmaild.dictconn`` handles each). The socket is created with the
configured permissions from the start (never looser), and a socket file left by a dead process
is replaced; a live one is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import socket
import stat
import time
from pathlib import Path

from .dictconn import DictConnection, DictHandler

log = logging.getLogger(__name__)

# On shutdown: how long connections get to finish (under supervisord's default stopwaitsecs
# of 10), and how quiet a connection must be before it is closed.
DRAIN_SECONDS = 8.0
QUIET_SECONDS = 0.05


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

    async def start(
        self, mode: int = 0o660, owner: str | None = None, group: str | None = None
    ) -> None:
        _raise_fd_limit()
        _remove_stale_socket(self.path)
        old_umask = os.umask(0o777 & ~mode)  # the socket never exists with looser permissions
        try:
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: DictConnection(self.handler, self.connections),
                str(self.path),
                backlog=4096,
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, mode)
        if owner or group:
            shutil.chown(self.path, owner, group)

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop listening, let connections finish what they asked, close them, remove the socket.

        A connection is closed once it has no request outstanding and has been quiet for a
        moment, or when ``drain`` seconds are up: Dovecot logs the key of a request that a
        closed connection never answered, and a passdb key may hold a password. Closing them
        all also matters because since Python 3.12 ``wait_closed()`` waits for every one.
        """
        if self._server is None:
            return
        self._server.close()
        deadline = time.monotonic() + drain
        while self.connections:
            late = time.monotonic() >= deadline
            for conn in list(self.connections):
                if late or conn.idle(QUIET_SECONDS):
                    conn.close()
                    self.connections.discard(conn)
            await asyncio.sleep(0.02)
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then close."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.close()
        log.info("stopped serving %s", self.path)
