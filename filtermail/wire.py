"""SMTP on the wire, for filtermail's server and its reinjection client: pure parsing and DATA.

* ``parse_path``: the argument of MAIL FROM / RCPT TO (RFC 5321 §4.1.2) with its ESMTP
  parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT, ... all accepted as they come:
  Postfix's before-queue proxy passes on whatever its client sent).
* ``read_data``: the message after DATA, up to the line holding a single dot (RFC 5321
  §4.1.1.4), read in large pieces instead of line by line and handed on still dot-stuffed:
  that is the form the reinjection sends again, so a large message is never copied through
  Python line by line. ``unstuff`` and ``stuff`` convert (RFC 5321 §4.5.2) where the checks
  need the message itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

END = b"\r\n.\r\n"  # RFC 5321 §4.1.1.4: CRLF ends the last line, then a line with one dot
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3, angle brackets included
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SOURCE_ROUTE = re.compile(r"@[^:,<>]*(?:,@[^:,<>]*)*:")  # RFC 5321 §4.1.2 A-d-l, ignored


class BadPath(ValueError):
    """The argument of MAIL or RCPT is no path; the message says why."""


@dataclass(frozen=True)
class Path:
    address: str  # as sent (case kept); "" for the null reverse-path <>
    params: tuple[str, ...]  # ESMTP parameters as sent, e.g. ("SIZE=1024", "BODY=8BITMIME")

    def param(self, keyword: str) -> str | None:
        """The value of parameter ``keyword`` ("" if it has none), None if absent."""
        for param in self.params:
            name, _, value = param.partition("=")
            if name.upper() == keyword:
                return value
        return None

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


def _angle_addr(text: str) -> tuple[str, str]:
    """(what is between < and >, the rest); a quoted local part may hold a '>'."""
    quoted = escaped = False
    for index, char in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[1:index], text[index + 1 :]
    raise BadPath("no closing '>'")


def parse_path(arg: str | None, keyword: str) -> Path:
    """The path in ``arg`` after ``keyword`` ("FROM:" or "TO:"), e.g. ``FROM:<a@b> SIZE=1``."""
    if not arg or arg[: len(keyword)].upper() != keyword:
        raise BadPath(f"expected {keyword}<address>")
    text = arg[len(keyword) :].lstrip(" ")
    if text.startswith("<"):
        address, rest = _angle_addr(text)
    else:  # a bare address, as lenient servers (Postfix among them) take it
        address, _, rest = text.partition(" ")
    address = _SOURCE_ROUTE.sub("", address, count=1) if address.startswith("@") else address
    if _CONTROL.search(address) or _CONTROL.search(rest):
        raise BadPath("control characters in the command")
    if len(address) + 2 > MAX_PATH:
        raise BadPath("address too long")
    if address and ("@" not in address or address.endswith("@") or address.startswith("@")):
        raise BadPath("address without a domain")
    return Path(address, tuple(rest.split()))


def unstuff(wire: bytes) -> bytes:
    """The message in dot-stuffed ``wire`` data: a line's leading dot removed (RFC 5321 §4.5.2)."""
    if not wire.startswith(b".") and b"\r\n." not in wire:  # most mail: ``wire`` itself, no copy
        return wire
    return (b"\r\n" + wire).replace(b"\r\n.", b"\r\n")[2:]


def stuff(data: bytes) -> bytes:
    """``data`` dot-stuffed for the wire: every line starting with a dot gets one more."""
    return (b"\r\n" + data).replace(b"\r\n.", b"\r\n..")[2:]


def _partial_end(tail: bytes) -> int:
    """How many bytes at the end of ``tail`` could begin the end line (a proper prefix of END)."""
    for length in (4, 3, 2, 1):
        if tail.endswith(END[:length]):
            return length
    return 0


async def read_data(
    reader: asyncio.StreamReader, write: Callable[[bytes], object], limit: int
) -> int:
    """Read the data after a 354 up to its end line; the size of the data, end line excluded.

    The data goes to ``write`` still dot-stuffed, in pieces, while the total stays within
    ``limit``; past it, the rest is read and counted but dropped (RFC 5321 §4.2.5: the reply
    comes after the end line). Nothing after the end line is consumed, so a command the client
    sends next stays in ``reader``.
    """
    total = 0

    def take(piece: bytes) -> None:
        nonlocal total
        total += len(piece)
        if total <= limit and piece:
            write(piece)

    # The CRLF of the DATA command begins the data's first line, so the end line may come at
    # once. While what was read last may be the start of the end line, read only the bytes that
    # would complete it (they are there in any case): the reader must never consume past it.
    held, skip = b"\r\n", 2
    while partial := _partial_end(held):
        held += await reader.readexactly(len(END) - partial)
        if held.endswith(END):
            take(held[skip:-3])
            return total
        keep = _partial_end(held)
        take(held[skip : len(held) - keep])
        held, skip = held[len(held) - keep :], 0
    take(held[skip:])
    # From here on no end line can have started in what was consumed: readuntil finds it.
    while True:
        try:
            chunk = await reader.readuntil(END)
        except asyncio.LimitOverrunError as exc:
            # no END within the reader's limit; the last len(END) - 1 bytes stay buffered
            take(await reader.readexactly(exc.consumed))
            continue
        take(chunk[:-3])  # the CRLF before the dot ends the message's last line
        return total
