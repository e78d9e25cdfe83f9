"""Dovecot 2.3's dict protocol, as its ``proxy`` dict client speaks it: pure parsing and encoding.

No sockets here: ``parse_line`` turns one request line into a small dataclass and the ``encode_*``
functions turn results into reply bytes, so both are unit- and property-tested without I/O.
The server (``chatmaild.dictserver``) is the only writer of these bytes.

Requests (src/lib-dict/dict-client.h), one per line, fields separated by TAB and escaped with
Dovecot's ``str_tabescape`` (``\\001`` followed by ``1``, ``t``, ``r``, ``n`` or ``0``). Dovecot
2.3.19 (Debian 12) was observed sending ``H3\\t2\\t0\\t\\tauth``, ``L<key>\\t<user>`` and
``I0\\t0\\tshared/userdb/\\t*``::

    H<major>\\t<minor>\\t<value type>\\t<user>\\t<dict name>   hello, first line
    L<key>[\\t<user>]                                      lookup
    I<flags>\\t<max rows>\\t<path>[\\t<user>]                iterate
    B<id>[\\t<user>]   C<id>   D<id>   R<id>                begin, commit, async commit, rollback
    S<id>\\t<key>\\t<value>   U<id>\\t<key>   P<id>\\t<key>\\t<value>
    A<id>\\t<key>\\t<diff>    T<id>\\t<secs>\\t<nsecs>
                                        set, unset, append, atomic inc, timestamp

Transaction ids are chosen by the client and are local to its connection. Replies are encoded
by ``chatmaild.dictreply``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# dict-client.h: DICT_CLIENT_MAX_LINE_LENGTH
MAX_LINE = 64 * 1024
# Dovecot 2.3.19 says H3; 2.3 releases before it said H2 with the same commands
PROTOCOL_MAJORS = (2, 3)

_UNESCAPE = {"1": "\001", "t": "\t", "r": "\r", "n": "\n", "0": "\0"}
_ESCAPE = {"\001": "\0011", "\t": "\001t", "\r": "\001r", "\n": "\001n", "\0": "\0010"}
_ESCAPE_TABLE = str.maketrans(_ESCAPE)


class DictProtocolError(ValueError):
    """A request line that does not follow the protocol."""


_NEEDS_ESCAPE = re.compile("[\x00\x01\t\r\n]")


def escape(text: str) -> str:
    """Dovecot's str_tabescape: make ``text`` safe inside one TAB-separated field."""
    if _NEEDS_ESCAPE.search(text) is None:  # the usual case: a JSON reply needs nothing
        return text
    return text.translate(_ESCAPE_TABLE)


def unescape(text: str) -> str:
    """Dovecot's str_tabunescape; an unknown escape stands for the character itself."""
    if "\001" not in text:
        return text
    out = []
    chars = iter(text)
    for ch in chars:
        if ch == "\001":
            nxt = next(chars, "")
            out.append(_UNESCAPE.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    major: int
    minor: int
    value_type: str
    user: str
    dict_name: str


@dataclass(frozen=True, slots=True)
class Lookup:
    key: str
    user: str = ""


@dataclass(frozen=True, slots=True)
class Iterate:
    flags: int
    max_rows: int
    path: str
    user: str = ""


@dataclass(frozen=True, slots=True)
class Begin:
    tid: int
    user: str = ""


@dataclass(frozen=True, slots=True)
class Commit:
    tid: int
    is_async: bool = False


@dataclass(frozen=True, slots=True)
class Rollback:
    tid: int


@dataclass(frozen=True, slots=True)
class Set:
    tid: int
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Unset:
    tid: int
    key: str


@dataclass(frozen=True, slots=True)
class Append:
    tid: int
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class AtomicInc:
    tid: int
    key: str
    diff: int


@dataclass(frozen=True, slots=True)
class Timestamp:
    tid: int
    secs: int
    nsecs: int


Request = (
    Hello
    | Lookup
    | Iterate
    | Begin
    | Commit
    | Rollback
    | Set
    | Unset
    | Append
    | AtomicInc
    | Timestamp
)
Change = Set | Unset | Append | AtomicInc | Timestamp


_INT_RE = re.compile(r"-?[0-9]{1,19}")


def _int(text: str, what: str) -> int:
    # int() also takes " 1", "+1", "1_0" and non-ASCII digits: the protocol sends plain digits
    if not _INT_RE.fullmatch(text):
        raise DictProtocolError(f"{what} is not a number")
    return int(text)


def _fields(body: str, low: int, high: int, cmd: str) -> list[str]:
    fields = [unescape(f) for f in body.split("\t")]
    if not low <= len(fields) <= high:
        raise DictProtocolError(f"{cmd} takes {low}..{high} fields, got {len(fields)}")
    return fields


def _hello(body: str) -> Hello:
    f = _fields(body, 2, 5, "hello")
    f += [""] * (5 - len(f))
    return Hello(_int(f[0], "major version"), _int(f[1], "minor version"), f[2], f[3], f[4])


def _lookup(body: str) -> Lookup:
    f = _fields(body, 1, 2, "lookup")
    return Lookup(*f)


def _iterate(body: str) -> Iterate:
    f = _fields(body, 2, 4, "iterate")
    if len(f) == 2:  # before 2.3: <flags> <path>
        return Iterate(_int(f[0], "flags"), 0, f[1])
    return Iterate(_int(f[0], "flags"), _int(f[1], "max rows"), *f[2:])


def _begin(body: str) -> Begin:
    f = _fields(body, 1, 2, "begin")
    return Begin(_int(f[0], "transaction id"), *f[1:])


def _tid_only(cls: type, cmd: str, **kw: bool):
    def parse(body: str):
        (tid,) = _fields(body, 1, 1, cmd)
        return cls(_int(tid, "transaction id"), **kw)

    return parse


def _set(body: str) -> Set:
    tid, k, v = _fields(body, 3, 3, "set")
    return Set(_int(tid, "transaction id"), k, v)


def _unset(body: str) -> Unset:
    tid, k = _fields(body, 2, 2, "unset")
    return Unset(_int(tid, "transaction id"), k)


def _append(body: str) -> Append:
    tid, k, v = _fields(body, 3, 3, "append")
    return Append(_int(tid, "transaction id"), k, v)


def _atomic_inc(body: str) -> AtomicInc:
    tid, k, diff = _fields(body, 3, 3, "atomic inc")
    return AtomicInc(_int(tid, "transaction id"), k, _int(diff, "diff"))


def _timestamp(body: str) -> Timestamp:
    tid, secs, nsecs = _fields(body, 3, 3, "timestamp")
    return Timestamp(_int(tid, "transaction id"), _int(secs, "secs"), _int(nsecs, "nsecs"))


_PARSERS = {
    "H": _hello,
    "L": _lookup,
    "I": _iterate,
    "B": _begin,
    "C": _tid_only(Commit, "commit"),
    "D": _tid_only(Commit, "async commit", is_async=True),
    "R": _tid_only(Rollback, "rollback"),
    "S": _set,
    "U": _unset,
    "P": _append,
    "A": _atomic_inc,
    "T": _timestamp,
}


# Commands the client expects no reply to: answering a malformed one would shift every later
# reply onto the wrong request, since the client pairs replies with requests in order.
_REPLYLESS = frozenset(b"HBSUPATR")


def expects_reply(line: bytes) -> bool:
    """Whether a (possibly malformed) request line must be answered."""
    return not line or line[0] not in _REPLYLESS


def transaction_id(line: bytes) -> int | None:
    """The transaction id of a (possibly malformed) transaction command, if one can be read."""
    head = line[1:].split(b"\t", 1)[0]
    if line[:1] in (b"B", b"S", b"U", b"P", b"A", b"T", b"R") and _INT_RE.fullmatch(
        head.decode("latin-1")
    ):
        return int(head)
    return None


def parse_line(line: bytes) -> Request:
    """Parse one request line (without its newline); raise DictProtocolError if malformed.

    Bytes that are not UTF-8 survive as surrogates (a password is the client's bytes, not ours
    to judge here); ``chatmaild.mailbox.check_address`` refuses them in addresses.
    """
    if len(line) > MAX_LINE:
        raise DictProtocolError("line too long")
    text = line.decode("utf-8", "surrogateescape").removesuffix("\r")
    if not text:
        raise DictProtocolError("empty line")
    parser = _PARSERS.get(text[0])
    if parser is None:
        raise DictProtocolError(f"unknown command {text[0]!r}")
    return parser(text[1:])
