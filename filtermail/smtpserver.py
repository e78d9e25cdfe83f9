"""filtermail's SMTP server: aiosmtpd's ``SMTP``, with MAIL, RCPT and DATA of its own.

aiosmtpd documents its ``smtp_<COMMAND>`` methods as the place to change a command. Three are
replaced here, for what a before-queue filter needs and aiosmtpd does not do:

* MAIL and RCPT take every ESMTP parameter Postfix passes on (aiosmtpd refuses RCPT
  parameters with 555, and MAIL parameters other than SIZE, BODY and SMTPUTF8), and the null
  reverse-path ``<>`` of bounces (aiosmtpd refuses it with 501). Paths are parsed by
  ``filtermail.wire``, which knows IP literals; the handler's ``handle_MAIL`` / ``handle_RCPT``
  hooks decide, as with aiosmtpd.
* DATA is read in pieces of up to ``line_length_limit`` (32 KiB, the documented way to raise
  aiosmtpd's stream limit) into a ``Spool`` instead of a list of lines in memory; the handler's
  ``handle_DATA`` hook then finds it in ``envelope.spool``.

Every reply comes from the handler; these methods only check the command's syntax and state.
The StreamReader is aiosmtpd's ``_reader`` (it has no public name); the component tests pin
that this works with the aiosmtpd release installed.
"""

from __future__ import annotations

import collections
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope

from .spool import Spool
from .wire import BadPath, parse_path, read_data

COMMAND_SIZE_LIMIT = 2048
# The reader pauses its socket at twice this much buffered: with 64 connections each sending a
# large message, the buffers stay within a few megabytes.
DATA_PIECE = 32 * 1024


class FilterEnvelope(Envelope):
    """aiosmtpd's envelope, plus what filtermail learns on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.enforcing: dict[str, bool] = {}  # lowercase recipient -> must be encrypted?
        self.spool: Spool | None = None
        self.data_size = 0  # all of DATA, also what went beyond the limit and was dropped


class FilterSMTP(SMTP):
    line_length_limit = DATA_PIECE  # the StreamReader's limit: DATA comes in pieces this large
    envelope: FilterEnvelope

    def __init__(self, handler: object, *, spool_dir: Path, max_size: int, **kwargs) -> None:
        super().__init__(handler, data_size_limit=max_size, enable_SMTPUTF8=True, **kwargs)
        self.spool_dir = spool_dir
        self.max_size = max_size
        # RFC 5321 §4.5.3.1.4 allows 512 octets, and each extension more (RFC 3461's ORCPT
        # and ENVID alone up to 500 and 100 xtext characters): per connection, not aiosmtpd's
        # class-wide table
        self.command_size_limits = collections.defaultdict(
            lambda: self.command_size_limit, MAIL=COMMAND_SIZE_LIMIT, RCPT=COMMAND_SIZE_LIMIT
        )

    def _create_envelope(self) -> FilterEnvelope:  # documented for subclasses
        return FilterEnvelope()

    async def smtp_EHLO(self, hostname: str | None) -> None:
        # aiosmtpd's sends each line with its own write: one write here, what a before-queue
        # filter offers (no AUTH, no STARTTLS: Postfix did both), and room for DSN parameters
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self.envelope = self._create_envelope()
        self.session.host_name = hostname
        self.session.extended_smtp = True
        await self.push(
            f"250-{self.hostname}\r\n250-SIZE {self.max_size}\r\n250-8BITMIME\r\n"
            "250-SMTPUTF8\r\n250 HELP"
        )

    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        try:
            path = parse_path(arg, "FROM:")
        except BadPath as exc:
            await self.push(f"501 5.5.4 Syntax: MAIL FROM:<address> ({exc})")
            return
        status = await self.event_handler.handle_MAIL(
            self, self.session, self.envelope, path.address, list(path.params)
        )
        await self.push(status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if self.envelope.mail_from is None:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        try:
            path = parse_path(arg, "TO:")
        except BadPath as exc:
            await self.push(f"501 5.5.4 Syntax: RCPT TO:<address> ({exc})")
            return
        if not path.address:
            await self.push("501 5.1.3 Syntax: RCPT TO:<address> (empty address)")
            return
        status = await self.event_handler.handle_RCPT(
            self, self.session, self.envelope, path.address, list(path.params)
        )
        await self.push(status)

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        spool = self.envelope.spool = Spool(self.spool_dir)
        try:
            # stops keeping data once over the limit, and still reads to the end line
            self.envelope.data_size = await read_data(self._reader, spool.write, self.max_size)
            status = await self.event_handler.handle_DATA(self, self.session, self.envelope)
        finally:
            spool.close()
            self.envelope = self._create_envelope()  # the transaction is over, whatever happened
        await self.push(status)
