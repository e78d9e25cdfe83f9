"""Replies of Dovecot 2.3's dict protocol: what handlers return, and its encoding as bytes.

Lookup ``O<value>`` / ``N`` / ``F<error>``; iteration ``O<key>\\t<value>`` rows ended by an empty
line (``F`` if it failed); commit ``O<id>`` / ``N<id>`` / ``F<id>`` (``A`` first for an async
commit ``D``). Values are escaped with Dovecot's ``str_tabescape``. Pure functions: the server
(``chatmaild.dictconn``) is the only writer of these bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dictproto import escape

# dict.h: DICT_ITERATE_FLAG_NO_VALUE
ITERATE_FLAG_NO_VALUE = 0x08


@dataclass(frozen=True, slots=True)
class Found:
    value: str


@dataclass(frozen=True, slots=True)
class NotFound:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


LookupResult = Found | NotFound | Failed
IterateResult = list[tuple[str, str]] | Failed
CommitResult = NotFound | Failed | None  # None: committed
NOT_FOUND = NotFound()


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_lookup(result: LookupResult) -> bytes:
    if isinstance(result, Found):
        return _bytes("O" + escape(result.value) + "\n")
    if isinstance(result, NotFound):
        return b"N\n"
    return _bytes("F" + escape(result.reason) + "\n")


def encode_iterate(rows: list[tuple[str, str]] | Failed, flags: int = 0) -> bytes:
    """Rows of an iteration and its terminating line (an empty line, or ``F`` on failure)."""
    if isinstance(rows, Failed):
        return b"F\n"
    with_value = not flags & ITERATE_FLAG_NO_VALUE
    out = ["O" + escape(k) + "\t" + (escape(v) if with_value else "") + "\n" for k, v in rows]
    out.append("\n")
    return _bytes("".join(out))


def encode_commit(tid: int, result: NotFound | Failed | None, is_async: bool = False) -> bytes:
    """``None`` means committed; NotFound is Dovecot's "nothing changed"; Failed a failure."""
    if result is None:
        code = "O"
    elif isinstance(result, NotFound):
        code = "N"
    else:
        code = "F"
    return f"{'A' if is_async else ''}{code}{tid}\n".encode()


def encode_failure() -> bytes:
    """The reply to a line that could not be parsed."""
    return b"F\n"
