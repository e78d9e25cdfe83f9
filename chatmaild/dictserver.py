"""An asyncio Unix-socket server for Dovecot's dict protocol, shared by every dict daemon.

Peer: Dovecot processes (auth-worker, imap, lmtp) connecting through ``proxy:<socket>:<name>``.
They keep connections open for a long time and may pipeline requests, so one event loop serves
thousands of connections; requests on one connection are handled concurrently but answered in
order, as the client expects. This module is the only writer of reply bytes.

A handler (``DictHandler``) answers lookups, iterations and commits. Each method may return its
result directly (fast path, no task created) or an awaitable for slow work such as hashing.
A malformed line is answered with a failure and logged once, without its contents (a passdb
line carries a password); the connection and the server keep going.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import resource
import shutil
import signal
import socket
import stat
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import dictproto as dp

log = logging.getLogger(__name__)

# Replies a client may have outstanding on one connection before we stop reading from it.
MAX_PENDING = 256


@dataclass
class Transaction:
    """Changes collected between ``B<id>`` and ``C<id>`` on one connection."""

    tid: int
    user: str
    changes: list[dp.Change] = field(default_factory=list)
    broken: bool = False


class DictHandler:
    """Answers one dict's requests. Every method may return a value or an awaitable of it."""

    name = "dict"

    def lookup(self, req: dp.Lookup) -> dp.LookupResult | Awaitable[dp.LookupResult]:
        return dp.NOT_FOUND

    def iterate(
        self, req: dp.Iterate
    ) -> list[tuple[str, str]] | dp.Failed | Awaitable[list[tuple[str, str]] | dp.Failed]:
        return []

    def commit(
        self, txn: Transaction
    ) -> dp.NotFound | dp.Failed | Awaitable[dp.NotFound | dp.Failed | None] | None:
        return dp.Failed("this dict is read-only")


class DictConnection(asyncio.Protocol):
    """One client connection: splits lines, dispatches, writes replies in request order."""

    def __init__(self, handler: DictHandler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.dict_name = ""
        self._buf = b""
        self._discarding = False
        self._pending: deque[asyncio.Future[bytes]] = deque()
        self._paused = False
        self._transactions: dict[int, Transaction] = {}

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._transactions.clear()

    def data_received(self, data: bytes) -> None:
        lines = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            if self._discarding:  # the tail of an overlong line
                self._discarding = False
                continue
            self._handle_line(line)
        if len(self._buf) > dp.MAX_LINE:
            self._buf = b""
            self._discarding = True
            self._bad_line(f"line longer than {dp.MAX_LINE} bytes")

    # -- dispatch --------------------------------------------------------------------------------

    def _handle_line(self, line: bytes) -> None:
        try:
            req = dp.parse_line(line)
        except dp.DictProtocolError as exc:
            self._bad_line(str(exc))
            return
        dispatch = self._DISPATCH[type(req)]
        dispatch(self, req)

    def _bad_line(self, reason: str) -> None:
        # never log the line itself: passdb lookups carry passwords
        log.warning("%s: bad request line: %s", self.dict_name or self.handler.name, reason)
        self._reply(dp.encode_failure())

    def _on_hello(self, req: dp.Hello) -> None:
        self.dict_name = req.dict_name
        if req.major not in dp.PROTOCOL_MAJORS:
            log.error(
                "%s: client speaks dict protocol %d, not one of %s: closing",
                req.dict_name,
                req.major,
                dp.PROTOCOL_MAJORS,
            )
            if self.transport:
                self.transport.close()

    def _on_lookup(self, req: dp.Lookup) -> None:
        self._call(self.handler.lookup, req, dp.encode_lookup, dp.Failed("internal error"))

    def _on_iterate(self, req: dp.Iterate) -> None:
        def encode(rows: list[tuple[str, str]] | dp.Failed) -> bytes:
            if req.max_rows and not isinstance(rows, dp.Failed):
                rows = rows[: req.max_rows]
            return dp.encode_iterate(rows, req.flags)

        self._call(self.handler.iterate, req, encode, dp.Failed("internal error"))

    def _on_begin(self, req: dp.Begin) -> None:
        if req.tid in self._transactions:
            log.warning("%s: transaction %d begun twice", self.dict_name, req.tid)
            self._transactions[req.tid].broken = True
            return
        self._transactions[req.tid] = Transaction(req.tid, req.user)

    def _on_change(self, req: dp.Change) -> None:
        txn = self._transactions.get(req.tid)
        if txn is None:
            log.warning("%s: change for unknown transaction %d ignored", self.dict_name, req.tid)
            return
        txn.changes.append(req)

    def _on_commit(self, req: dp.Commit) -> None:
        txn = self._transactions.pop(req.tid, None)
        if txn is None or txn.broken:
            log.warning("%s: commit of unknown transaction %d", self.dict_name, req.tid)
            self._reply(dp.encode_commit(req.tid, dp.Failed("unknown"), req.is_async))
            return

        def encode(result: dp.NotFound | dp.Failed | None) -> bytes:
            return dp.encode_commit(req.tid, result, req.is_async)

        self._call(self.handler.commit, txn, encode, dp.Failed("internal error"))

    def _on_rollback(self, req: dp.Rollback) -> None:
        self._transactions.pop(req.tid, None)

    _DISPATCH: dict[type, Callable[[DictConnection, object], None]] = {
        dp.Hello: _on_hello,
        dp.Lookup: _on_lookup,
        dp.Iterate: _on_iterate,
        dp.Begin: _on_begin,
        dp.Commit: _on_commit,
        dp.Rollback: _on_rollback,
        dp.Set: _on_change,
        dp.Unset: _on_change,
        dp.Append: _on_change,
        dp.AtomicInc: _on_change,
        dp.Timestamp: _on_change,
    }

    # -- replies ---------------------------------------------------------------------------------

    def _call(self, method, arg, encode, on_error) -> None:
        """Run a handler method; reply now if it answered at once, else when it finishes."""
        try:
            result = method(arg)
        except Exception:
            log.exception("%s: handler failed", self.dict_name or self.handler.name)
            result = on_error
        if inspect.isawaitable(result):
            self._reply(self._finish(result, encode, on_error))
        else:
            self._reply(encode(result))

    async def _finish(self, awaitable, encode, on_error) -> bytes:
        try:
            result = await awaitable
        except Exception:
            log.exception("%s: handler failed", self.dict_name or self.handler.name)
            result = on_error
        return encode(result)

    def _reply(self, reply: bytes | Awaitable[bytes]) -> None:
        if isinstance(reply, bytes):
            if not self._pending:
                self._write(reply)
                return
            done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            done.set_result(reply)
            self._pending.append(done)
            return
        task = asyncio.ensure_future(reply)
        self._pending.append(task)
        task.add_done_callback(self._flush)
        if len(self._pending) >= MAX_PENDING and self.transport and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _flush(self, _fut: object = None) -> None:
        while self._pending and self._pending[0].done():
            self._write(self._pending.popleft().result())
        if self._paused and len(self._pending) < MAX_PENDING // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead process; refuse to take over a live one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"{path} exists and is not a socket: refusing to replace it")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
            log.info("removed stale socket %s", path)
            return
    raise SystemExit(f"{path}: another process is serving on this socket")


def _raise_fd_limit() -> None:
    # thousands of Dovecot connections need more than the usual soft limit of 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(
    path: Path,
    handler: DictHandler,
    mode: int = 0o660,
    owner: str | None = None,
    group: str | None = None,
) -> asyncio.AbstractServer:
    """Listen on the Unix socket ``path`` with safe permissions, replacing a stale socket."""
    _raise_fd_limit()
    _remove_stale_socket(path)
    old_umask = os.umask(0o777 & ~mode)  # the socket never exists with looser permissions
    try:
        server = await asyncio.get_running_loop().create_unix_server(
            lambda: DictConnection(handler), str(path), backlog=1024
        )
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if owner or group:
        shutil.chown(path, owner, group)
    return server


async def run_until_signalled(server: asyncio.AbstractServer, path: Path) -> None:
    """Serve until SIGTERM or SIGINT, then close the socket and remove its file."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    log.info("stopped serving %s", path)
