"""Hands accepted mail back to Postfix: a small SMTP client keeping a few connections open.

filtermail answers its client (Postfix's before-queue proxy) only with what Postfix's
reinjection listener (``postfix_reinject_port[_incoming]`` on 127.0.0.1) said about the same
message, so nothing is acknowledged that Postfix has not taken: its refusal is relayed as it
is, and a connection failure becomes ``451 4.3.0``. At most ``connections`` connections are
open; they are kept and reused (a transaction ends with its final reply; RSET after a refused
one), which spares a connect and an EHLO per message, and a message finding all of them busy
waits for one (each is busy for a fraction of a millisecond on loopback: opening one more
would cost more than the wait, and each holds one of Postfix's smtpd processes). With
PIPELINING advertised (RFC 2920), MAIL, RCPT and DATA go out in one write. The message goes
out as it came in, dot-stuffed, in pieces, so a large one is streamed from filtermail's spool
and never held whole.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^\x20-\x7e]")
WRITE_SIZE = 64 * 1024


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


class ProtocolError(OSError):
    """The reinjection listener said something that is no SMTP reply."""


@dataclass(frozen=True)
class Transaction:
    mail_from: str
    rcpts: tuple[str, ...]
    eight_bit: bool = False  # BODY=8BITMIME (RFC 6152)
    smtputf8: bool = False  # SMTPUTF8 (RFC 6531)


class Connection:
    """One SMTP client connection, between transactions always in the initial state."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.extensions: frozenset[str] = frozenset()
        self.idle_since = time.monotonic()
        self.broken = False  # must not be used again

    @classmethod
    async def open(cls, host: str, port: int, helo: str) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        conn = cls(reader, writer)
        try:
            greeting = await conn.reply()
            if greeting.code != 220:
                raise ProtocolError(f"greeting {greeting.line}")
            conn.writer.write(f"EHLO {helo}\r\n".encode())
            lines = await conn.reply_lines()
        except BaseException:
            conn.close()
            raise
        if not lines[-1].startswith(b"250"):
            conn.close()
            raise ProtocolError("EHLO refused")
        conn.extensions = frozenset(
            line[4:].split(b" ")[0].decode("ascii", "replace").upper() for line in lines[1:]
        )
        return conn

    async def reply_lines(self) -> list[bytes]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise ProtocolError("connection closed")
            line = line.rstrip(b"\r\n")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
                raise ProtocolError("not an SMTP reply")
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    async def reply(self) -> Reply:
        lines = await self.reply_lines()
        text = " ".join(line[4:].decode("utf-8", "replace").strip() for line in lines)
        return Reply(int(lines[-1][:3]), _UNSAFE.sub("?", text))

    async def send(self, tx: Transaction, pieces: AsyncIterator[bytes]) -> Reply:
        """One transaction; raises OSError (ProtocolError included) if the connection fails."""
        params = ""
        if tx.eight_bit and "8BITMIME" in self.extensions:
            params += " BODY=8BITMIME"
        if tx.smtputf8 and "SMTPUTF8" in self.extensions:
            params += " SMTPUTF8"
        commands = [f"MAIL FROM:<{tx.mail_from}>{params}\r\n"]
        commands += [f"RCPT TO:<{rcpt}>\r\n" for rcpt in tx.rcpts]
        commands.append("DATA\r\n")
        encoded = [c.encode("utf-8", "surrogateescape") for c in commands]
        if "PIPELINING" in self.extensions:
            self.writer.write(b"".join(encoded))
            replies = [await self.reply() for _ in encoded]
        else:
            replies = []
            for command in encoded:
                self.writer.write(command)
                replies.append(await self.reply())
                if not replies[-1].ok:
                    break
        refused = next((r for r in replies[:-1] if not r.ok), None)
        if replies[-1].code == 354 and refused is not None:
            # some recipients refused, DATA open for the others: only closing the connection
            # ends that transaction without a message to part of the recipients
            self.broken = True
            return refused
        if replies[-1].code != 354 or refused is not None:
            await self.reset()
            return refused or replies[-1]
        # pieces are gathered up to WRITE_SIZE: one send for a small message and its end line
        batch: list[bytes] = []
        size = 0
        async for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= WRITE_SIZE:
                self.writer.write(b"".join(batch))
                await self.writer.drain()
                batch, size = [], 0
        batch.append(b".\r\n")
        self.writer.write(b"".join(batch))
        final = await self.reply()
        if not final.ok:
            await self.reset()
        return final

    async def reset(self) -> None:
        self.writer.write(b"RSET\r\n")
        if (await self.reply()).code != 250:
            raise ProtocolError("RSET refused")

    def close(self) -> None:
        self.writer.close()

    def quit(self) -> None:
        """End the session politely; the reply does not matter."""
        self.writer.write(b"QUIT\r\n")
        self.writer.close()  # after what is buffered has gone out


IDLE_TIMEOUT = 30.0  # seconds a kept connection may stay idle (Postfix's smtpd_timeout: 300)


class Reinjector:
    """Sends messages to ``host:port`` over at most ``connections`` kept connections.

    A connection idle for ``idle_timeout`` seconds is ended with QUIT, so that Postfix's smtpd
    on the other side ends its session (and, after max_idle, its process) instead of timing
    out on it (smtpd_timeout) with a line in the log.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int = 16,
        idle_timeout: float = IDLE_TIMEOUT,
        timeout: float = 60.0,
        helo: str = "localhost",
    ) -> None:
        self.host, self.port, self.helo = host, port, helo
        self.idle_timeout, self.timeout = idle_timeout, timeout
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[Connection] = []
        self._reaper: asyncio.TimerHandle | None = None

    async def send(self, tx: Transaction, pieces: AsyncIterator[bytes]) -> Reply:
        """Postfix's reply to the message, or 451 if it could not be asked."""
        async with self._slots:
            return await self._send(tx, _Watched(pieces))

    async def _send(self, tx: Transaction, watched: _Watched) -> Reply:
        for attempt in (1, 2):
            conn = self._take_idle()
            fresh = conn is None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await Connection.open(self.host, self.port, self.helo)
                    reply = await conn.send(tx, watched)
            except (OSError, EOFError, TimeoutError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                # a kept connection the listener has closed meanwhile fails before any of
                # the message went out: then, and only then, try once more on a new one
                if not fresh and attempt == 1 and not watched.started:
                    continue
                log.error("reinjection to %s:%d failed: %s", self.host, self.port, _describe(exc))
                return Reply(451, "4.3.0 Could not hand the message on, try again later")
            except BaseException:  # cancelled (the client went away): the transaction is open
                if conn is not None:
                    conn.close()
                raise
            self._keep(conn, reply)
            return reply
        raise AssertionError("unreachable")

    def _take_idle(self) -> Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self.idle_timeout:
                return conn
            conn.quit()
        return None

    def _keep(self, conn: Connection, reply: Reply) -> None:
        if conn.broken or reply.code == 421:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.idle_timeout, self._reap)

    def _reap(self) -> None:
        """QUIT the connections idle for idle_timeout; come back for the others."""
        self._reaper = None
        now = time.monotonic()
        expired = [c for c in self._idle if now - c.idle_since >= self.idle_timeout]
        self._idle = [c for c in self._idle if c not in expired]
        for conn in expired:
            conn.quit()
        if self._idle:
            due = min(c.idle_since for c in self._idle) + self.idle_timeout - now
            self._reaper = asyncio.get_running_loop().call_later(max(due, 0.01), self._reap)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        while self._idle:
            conn = self._idle.pop()
            conn.close()


class _Watched:
    """Passes the message's pieces on and remembers whether any was taken."""

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self.pieces = pieces
        self.started = False

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> bytes:
        self.started = True
        return await self.pieces.__anext__()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def transaction(mail_from: str, rcpts: Sequence[str], mail_params: Sequence[str]) -> Transaction:
    """The reinjection's transaction for a client's MAIL parameters (only these two matter)."""
    upper = [param.upper() for param in mail_params]
    return Transaction(mail_from, tuple(rcpts), "BODY=8BITMIME" in upper, "SMTPUTF8" in upper)
