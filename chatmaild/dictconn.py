"""One Dovecot dict client connection: split lines, dispatch, answer in request order.

Dovecot pairs each reply with its oldest outstanding request, so replies must come out in the
order requests came in, exactly one per request that expects one. Handlers may answer at once
(fast path: no task) or return an awaitable; replies that finish early wait in a queue behind
slower ones. The only bytes written to a client are written by ``_write`` below.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import dictproto as dp
from . import dictreply as dr

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
    # the answer to a lookup whose handler raised: a failure, unless a dict must never fail
    lookup_failure: dr.LookupResult = dr.Failed("internal error")

    def lookup(self, req: dp.Lookup) -> dr.LookupResult | Awaitable[dr.LookupResult]:
        return dr.NOT_FOUND

    def iterate(self, req: dp.Iterate) -> dr.IterateResult | Awaitable[dr.IterateResult]:
        return []

    def commit(self, txn: Transaction) -> dr.CommitResult | Awaitable[dr.CommitResult]:
        return dr.Failed("this dict is read-only")


@dataclass
class _Pending:
    reply: asyncio.Future[bytes]
    fallback: bytes  # written instead if producing the reply failed or was cancelled


class DictConnection(asyncio.Protocol):
    def __init__(self, handler: DictHandler, connections: set[DictConnection]) -> None:
        self.handler = handler
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.dict_name = handler.name
        self._buf = bytearray()  # the start of a line whose newline has not come yet
        self._discarding = False  # inside an overlong line, until its newline
        self._closing = False
        self._paused = False
        self._held = False  # shutting down: no new requests are read from now on
        self._pending: deque[_Pending] = deque()
        self._transactions: dict[int, Transaction] = {}
        self.last_activity = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._closing = True
        self._transactions.clear()
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        # Only the new bytes are searched and each byte is copied at most twice, so a line
        # arriving in many small pieces costs linear time, not a copy of the buffer per piece.
        self.last_activity = time.monotonic()
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._closing:
                return
            if self._discarding:  # the end of an overlong line, already answered
                self._discarding = False
            elif self._buf:
                self._buf += memoryview(data)[start:end]
                line = bytes(self._buf)
                self._buf.clear()
                self._handle_line(line)
            else:
                self._handle_line(data[start:end])
            start = end + 1
        if self._closing or self._discarding:
            return
        self._buf += memoryview(data)[start:]
        if len(self._buf) > dp.MAX_LINE:
            line = bytes(self._buf)
            self._buf.clear()
            self._discarding = True
            self._bad_line(line, f"line longer than {dp.MAX_LINE} bytes")

    def idle(self, quiet: float) -> bool:
        """No request outstanding, none half-received, and none for ``quiet`` seconds."""
        return (
            not self._pending and not self._buf and time.monotonic() - self.last_activity >= quiet
        )

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close now, even if the client does not read what is still to be written."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- passing the connection on to the next process (chatmaild.handoff) ----------------------

    def hold(self) -> None:
        """Read no new request, except to complete a half-received (or overlong) line."""
        self._held = True
        if self.transport is None:
            return
        reading_on = bool(self._buf) or self._discarding
        if reading_on and self._paused:
            self._paused = False
            self.transport.resume_reading()
        elif not reading_on and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def settled(self) -> bool:
        """Every request answered and written, no line half-received, no transaction open.

        Only then may another process carry on with the connection: it starts reading at the
        beginning of the next request, and owes no reply.
        """
        return (
            self.transport is not None
            and not self._closing
            and not self._pending
            and not self._buf
            and not self._discarding
            and not self._transactions
            and self.transport.get_write_buffer_size() == 0
        )

    def duplicate(self) -> socket.socket:
        """A second descriptor of the connection, to pass on (see ``let_go``)."""
        assert self.transport is not None
        fileno = self.transport.get_extra_info("socket").fileno()
        return socket.socket(fileno=os.dup(fileno))

    def let_go(self) -> None:
        """Drop this side of a connection passed on: closes our descriptor only, no shutdown."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- dispatch --------------------------------------------------------------------------------

    def _handle_line(self, line: bytes) -> None:
        try:
            req = dp.parse_line(line)
        except dp.DictProtocolError as exc:
            self._bad_line(line, str(exc))
            return
        self._DISPATCH[type(req)](self, req)

    def _bad_line(self, line: bytes, reason: str) -> None:
        # never log the line itself: passdb lookups carry passwords
        log.warning("%s: bad request line: %s", self.dict_name, reason)
        if dp.expects_reply(line):
            self._reply(dr.encode_failure())
        tid = dp.transaction_id(line)
        if tid is not None and tid in self._transactions:
            self._transactions[tid].broken = True

    def _on_hello(self, req: dp.Hello) -> None:
        self.dict_name = req.dict_name or self.handler.name
        if req.major not in dp.PROTOCOL_MAJORS:
            log.error(
                "%s: client speaks dict protocol %d, not %s: closing",
                self.dict_name,
                req.major,
                " or ".join(map(str, dp.PROTOCOL_MAJORS)),
            )
            self.close()

    def _on_lookup(self, req: dp.Lookup) -> None:
        self._call(self.handler.lookup, req, dr.encode_lookup, self.handler.lookup_failure)

    def _on_iterate(self, req: dp.Iterate) -> None:
        def encode(rows: dr.IterateResult) -> bytes:
            if req.max_rows and not isinstance(rows, dr.Failed):
                rows = rows[: req.max_rows]
            return dr.encode_iterate(rows, req.flags)

        self._call(self.handler.iterate, req, encode, dr.Failed("internal error"))

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
        def encode(result: dr.CommitResult) -> bytes:
            return dr.encode_commit(req.tid, result, req.is_async)

        txn = self._transactions.pop(req.tid, None)
        if txn is None or txn.broken:
            log.warning("%s: commit of unknown or broken transaction %d", self.dict_name, req.tid)
            self._reply(encode(dr.Failed("unknown transaction")))
            return
        self._call(self.handler.commit, txn, encode, dr.Failed("internal error"))

    def _on_rollback(self, req: dp.Rollback) -> None:
        self._transactions.pop(req.tid, None)

    _DISPATCH: dict[type, Callable[[DictConnection, Any], None]] = {
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

    def _call(
        self,
        method: Callable[[Any], Any],
        arg: Any,
        encode: Callable[[Any], bytes],
        on_error: object,
    ) -> None:
        """Run a handler method; reply now if it answered at once, else when it finishes."""
        try:
            result = method(arg)
            if not isinstance(result, Awaitable):
                self._reply(encode(result))
                return
        except Exception:
            log.exception("%s: handler failed", self.dict_name)
            self._reply(encode(on_error))
            return
        task = asyncio.ensure_future(self._finish(result, encode, on_error))
        self._enqueue(_Pending(task, encode(on_error)))
        task.add_done_callback(self._flush)

    async def _finish(
        self, awaitable: Awaitable[Any], encode: Callable[[Any], bytes], on_error: object
    ) -> bytes:
        try:
            return encode(await awaitable)
        except Exception:
            log.exception("%s: handler failed", self.dict_name)
            return encode(on_error)

    def _reply(self, data: bytes) -> None:
        if not self._pending:
            self._write(data)
            return
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        done.set_result(data)
        self._enqueue(_Pending(done, data))

    def _enqueue(self, pending: _Pending) -> None:
        self._pending.append(pending)
        if len(self._pending) >= MAX_PENDING and self.transport and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _flush(self, _fut: object = None) -> None:
        while self._pending and self._pending[0].reply.done():
            item = self._pending.popleft()
            ok = not item.reply.cancelled() and item.reply.exception() is None
            self._write(item.reply.result() if ok else item.fallback)
        if (
            self._paused
            and not self._held
            and len(self._pending) < MAX_PENDING // 2
            and self.transport
        ):
            self._paused = False
            self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
