"""filtermail's SMTP server: one asyncio protocol per connection, for a before-queue filter.

Postfix's before-queue proxy opens one connection per message (EHLO, MAIL, RCPT.., DATA, QUIT;
no pipelining), so what a connection costs limits the whole site. aiosmtpd's ``SMTP`` costs
about 0.15 ms of CPU in its constructor alone (it reflects over itself and the handler for
every connection) and more in its per-command logging and timers; this server keeps only what
a filter behind Postfix needs, with aiosmtpd's replies and limits:

* greeting ``220 <hostname> <ident>``; EHLO offers SIZE, 8BITMIME, SMTPUTF8 and HELP (no AUTH,
  no STARTTLS: Postfix did both), HELO, MAIL, RCPT, DATA, RSET, NOOP, VRFY (252), EXPN (502),
  HELP, QUIT; an unknown command gets 500, and the fifth one 502 and the end of the connection.
* command lines: 512 octets (RFC 5321 §4.5.3.1.4), MAIL and RCPT after EHLO ``COMMAND_SIZE_LIMIT``
  (each extension adds room, RFC 3461's ORCPT and ENVID alone up to 600 characters); a longer
  line is read to its end and answered 500.
* MAIL and RCPT take every ESMTP parameter Postfix passes on, and the null reverse-path ``<>``;
  paths are parsed by ``filtermail.wire``. DATA is read in pieces of up to ``DATA_PIECE`` into
  a ``Spool``, dot-stuffed as it came.
* every reply to MAIL, RCPT and DATA comes from the handler (``filtermail.handler.Filter``):
  ``handle_MAIL``, ``handle_RCPT``, ``handle_DATA`` return the reply line, and an exception in
  any command becomes the reply of ``handle_exception`` (a 451), the connection going on.
* a connection idle for ``timeout`` seconds is closed; one the client closes (or half-closes)
  ends at once, also while its message is being handed on.

The command methods return their reply; ``_send`` is the one place that writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .spool import Spool
from .wire import BadPath, parse_path, read_data

log = logging.getLogger(__name__)

COMMAND_LINE_LIMIT = 512  # RFC 5321 §4.5.3.1.4, CRLF included
COMMAND_SIZE_LIMIT = 2048  # MAIL and RCPT after EHLO: room for their extensions' parameters
# The reader pauses its socket at twice this much buffered: with 64 connections each sending a
# large message, the buffers stay within a few megabytes. Also the longest line read whole.
DATA_PIECE = 32 * 1024
# Each read from a socket goes into one buffer the server's connections share (one event loop),
# so a connection holds at most what its reader keeps: asyncio's own reads are 256 KiB each.
RECV_SIZE = 64 * 1024
BOGUS_LIMIT = 5  # unknown commands on one connection before it is closed (as aiosmtpd)
LINE_TOO_LONG = "500 Command line too long"
BAD_SYNTAX = "500 Error: bad syntax"
NEED_HELO = "503 Error: send HELO first"


@dataclass
class FilterEnvelope:
    """One transaction: what MAIL, RCPT and DATA brought, and what filtermail learnt of it."""

    mail_from: str | None = None
    mail_options: list[str] = field(default_factory=list)
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[str] = field(default_factory=list)
    enforcing: dict[str, bool] = field(default_factory=dict)  # lowercase rcpt -> must encrypt?
    spool: Spool | None = None
    data_size: int = 0  # all of DATA, also what went beyond the limit and was dropped


class Handler(Protocol):  # filtermail.handler.Filter
    async def handle_MAIL(self, envelope: FilterEnvelope, address: str, options: list) -> str: ...
    async def handle_RCPT(self, envelope: FilterEnvelope, address: str, options: list) -> str: ...
    async def handle_DATA(self, envelope: FilterEnvelope) -> str: ...
    async def handle_exception(self, error: Exception) -> str: ...


@dataclass(frozen=True)
class ServerConfig:
    """What every connection shares (built once: a connection copies nothing of it)."""

    handler: Handler
    spool_dir: Path
    max_size: int
    hostname: str
    ident: str = "filtermail"
    timeout: float = 300.0  # seconds without a command before the connection is closed
    recv_buffer: memoryview = field(default_factory=lambda: memoryview(bytearray(RECV_SIZE)))


class FilterSMTP(asyncio.BufferedProtocol):
    """One client connection; ``create_server(lambda: FilterSMTP(config), ...)``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.reader = asyncio.StreamReader(limit=DATA_PIECE)
        self.transport: asyncio.Transport | None = None
        self.host_name: str | None = None  # from HELO or EHLO
        self.extended_smtp = False  # EHLO, not HELO
        self.envelope = FilterEnvelope()
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_command = 0.0
        self._writable: asyncio.Future | None = None  # while the transport's buffer is full
        self._quit = False

    # -- asyncio.BufferedProtocol ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.reader.set_transport(transport)  # so a full buffer pauses reading
        loop = asyncio.get_running_loop()
        self._last_command = loop.time()
        self._timer = loop.call_at(self._last_command + self.config.timeout, self._check_idle)
        self._task = loop.create_task(self._serve())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.config.recv_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.feed_data(self.config.recv_buffer[:nbytes].tobytes())

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        self._end()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.reader.feed_eof()
        else:
            self.reader.set_exception(exc)
        self._end()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.transport = None

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _end(self) -> None:
        if self._task is not None:  # a message being handed on for a gone client is dropped
            self._task.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def _check_idle(self) -> None:
        # one timer per connection, moved on only when it fires: a command costs no timer
        loop = asyncio.get_running_loop()
        due = self._last_command + self.config.timeout
        if loop.time() < due:
            self._timer = loop.call_at(due, self._check_idle)
        elif self.transport is not None:
            log.debug("connection idle for %.0f s: closed", self.config.timeout)
            self.transport.close()

    # -- the conversation -------------------------------------------------------------------

    def _send(self, reply: str) -> None:
        if self.transport is not None:
            self.transport.write(reply.encode("utf-8", "surrogateescape") + b"\r\n")

    async def _serve(self) -> None:
        self._send(f"220 {self.config.hostname} {self.config.ident}")
        bogus = BOGUS_LIMIT
        while self.transport is not None and not self.transport.is_closing():
            if self._writable is not None:  # a client that does not read its replies
                await self._writable
            try:
                line = await self._read_line()
            except (OSError, asyncio.IncompleteReadError):  # the connection failed or ended
                return
            try:
                reply = await self._command(line)
            except (ConnectionError, asyncio.IncompleteReadError):  # the client went away
                self._close()
                return
            except Exception as error:
                reply = await self._exception_reply(error)
            if reply is None:  # an unknown command
                bogus -= 1
                if bogus < 1:
                    self._send("502 5.5.1 Too many unrecognized commands, goodbye.")
                    self._close()
                    return
                reply = f'500 Error: command "{_verb(line)}" not recognized'
            self._send(reply)
            if self._quit:
                self._close()
                return

    async def _read_line(self) -> bytes | None:
        """The next command line; None if it was longer than the reader's limit (consumed)."""
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await self.reader.readexactly(exc.consumed)
        while True:  # drop the rest of the long line
            try:
                await self.reader.readuntil(b"\n")
                return None
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)

    async def _command(self, line: bytes | None) -> str | None:
        """The reply to one command line; None for an unknown command."""
        if line is None:
            return LINE_TOO_LONG
        line = line.rstrip(b"\r\n")
        if not line:
            return BAD_SYNTAX
        verb_bytes, _, arg_bytes = line.partition(b" ")
        try:
            verb = verb_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            return BAD_SYNTAX
        # RFC 6531: arguments may be UTF-8; surrogateescape keeps any other bytes as they were
        arg = arg_bytes.strip().decode("utf-8", "surrogateescape") or None
        limit = COMMAND_SIZE_LIMIT if self.extended_smtp and verb in ("MAIL", "RCPT") else 0
        if len(line) > (limit or COMMAND_LINE_LIMIT):
            return LINE_TOO_LONG
        method = COMMANDS.get(verb)
        if method is None:
            return None
        self._last_command = asyncio.get_running_loop().time()
        return await method(self, arg)

    async def _exception_reply(self, error: Exception) -> str:
        try:
            return await self.config.handler.handle_exception(error)
        except Exception as inner:
            log.error("internal error (%s) while answering an error", type(inner).__name__)
            return "451 4.3.0 Internal error, try again later"

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- commands ---------------------------------------------------------------------------

    async def smtp_EHLO(self, arg: str | None) -> str:
        if not arg:
            return "501 5.5.4 Syntax: EHLO hostname"
        self.envelope = FilterEnvelope()
        self.host_name, self.extended_smtp = arg, True
        return (
            f"250-{self.config.hostname}\r\n250-SIZE {self.config.max_size}\r\n250-8BITMIME\r\n"
            "250-SMTPUTF8\r\n250 HELP"
        )

    async def smtp_HELO(self, arg: str | None) -> str:
        if not arg:
            return "501 Syntax: HELO hostname"
        self.envelope = FilterEnvelope()
        self.host_name, self.extended_smtp = arg, False
        return f"250 {self.config.hostname}"

    async def smtp_MAIL(self, arg: str | None) -> str:
        if not self.host_name:
            return NEED_HELO
        if self.envelope.mail_from is not None:
            return "503 5.5.1 Error: nested MAIL command"
        try:
            path = parse_path(arg, "FROM:")
        except BadPath as exc:
            return f"501 5.5.4 Syntax: MAIL FROM:<address> ({exc})"
        return await self.config.handler.handle_MAIL(self.envelope, path.address, list(path.params))

    async def smtp_RCPT(self, arg: str | None) -> str:
        if not self.host_name:
            return NEED_HELO
        if self.envelope.mail_from is None:
            return "503 5.5.1 Error: need MAIL command"
        try:
            path = parse_path(arg, "TO:")
        except BadPath as exc:
            return f"501 5.5.4 Syntax: RCPT TO:<address> ({exc})"
        if not path.address:
            return "501 5.1.3 Syntax: RCPT TO:<address> (empty address)"
        return await self.config.handler.handle_RCPT(self.envelope, path.address, list(path.params))

    async def smtp_DATA(self, arg: str | None) -> str:
        if not self.host_name:
            return NEED_HELO
        if not self.envelope.rcpt_tos:
            return "503 5.5.1 Error: need RCPT command"
        if arg:
            return "501 5.5.4 Syntax: DATA"
        self._send("354 End data with <CR><LF>.<CR><LF>")
        envelope = self.envelope
        spool = envelope.spool = Spool(self.config.spool_dir)
        try:
            # stops keeping data once over the limit, and still reads to the end line
            envelope.data_size = await read_data(self.reader, spool.write, self.config.max_size)
            return await self.config.handler.handle_DATA(envelope)
        finally:
            spool.close()
            self.envelope = FilterEnvelope()  # the transaction is over, whatever happened

    async def smtp_RSET(self, arg: str | None) -> str:
        if arg:
            return "501 Syntax: RSET"
        self.envelope = FilterEnvelope()
        return "250 OK"

    async def smtp_NOOP(self, arg: str | None) -> str:
        return "250 OK"

    async def smtp_VRFY(self, arg: str | None) -> str:
        if not arg:
            return "501 Syntax: VRFY <address>"
        return "252 Cannot VRFY user, but will accept message and attempt delivery"

    async def smtp_EXPN(self, arg: str | None) -> str:
        return "502 EXPN not implemented"

    async def smtp_HELP(self, arg: str | None) -> str:
        return "250 Supported commands: " + " ".join(sorted(COMMANDS))

    async def smtp_QUIT(self, arg: str | None) -> str:
        if arg:
            return "501 Syntax: QUIT"
        self._quit = True
        return "221 Bye"


def _verb(line: bytes | None) -> str:
    return (line or b"").split(b" ", 1)[0].strip().upper().decode("ascii", "replace")


COMMANDS: dict[str, Callable[[FilterSMTP, str | None], Awaitable[str | None]]] = {
    "EHLO": FilterSMTP.smtp_EHLO,
    "HELO": FilterSMTP.smtp_HELO,
    "MAIL": FilterSMTP.smtp_MAIL,
    "RCPT": FilterSMTP.smtp_RCPT,
    "DATA": FilterSMTP.smtp_DATA,
    "RSET": FilterSMTP.smtp_RSET,
    "NOOP": FilterSMTP.smtp_NOOP,
    "VRFY": FilterSMTP.smtp_VRFY,
    "EXPN": FilterSMTP.smtp_EXPN,
    "HELP": FilterSMTP.smtp_HELP,
    "QUIT": FilterSMTP.smtp_QUIT,
}
