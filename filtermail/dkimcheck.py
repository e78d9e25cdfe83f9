"""The pure half of DKIM verification: which signatures to try, and does one verify. No sockets.

``filtermail.dkim.Verifier`` fetches the keys that ``signatures`` names and passes each to
``verify_one``, so these rules are unit tested with keys held in a dict.

dkimpy parses and verifies; this module bounds what it is given, because some of its regular
expressions take time quadratic in a run of white space (dkimpy 1.1.8: one body line of 40 KB of
spaces takes 1.3 s to canonicalize "relaxed"; 1 MB would take minutes), and a header field
continued over many lines is copied once per line. Hence:

- the header section is at most MAX_HEADER_BYTES in at most MAX_HEADER_LINES lines;
- a DKIM-Signature field is at most MAX_SIGNATURE_BYTES, has no white-space run longer than
  MAX_WSP_RUN, and names at most MAX_SIGNED_NAMES fields in h=;
- a body canonicalized "relaxed" first has each white-space run collapsed to one space (RFC 6376
  §3.4.4 turns every run into one SP anyway, so the body hash does not change);
- at most MAX_SIGNATURES signatures of the From: domain are tried.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_LINES = 1000
MAX_SIGNATURES = 5
MAX_SIGNATURE_BYTES = 8192
MAX_SIGNED_NAMES = 100
MAX_WSP_RUN = 64

# RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid. ed25519-sha256 (RFC 8463)
# needs PyNaCl, which chatmaild does not install; such signatures are passed over.
ALGORITHMS = (b"rsa-sha256",)
CANONICALIZATIONS = (b"simple", b"relaxed")

_EMPTY_LINE = re.compile(rb"\n\r?\n")
_LONG_WSP = re.compile(rb"[ \t\r\n]{%d}" % (MAX_WSP_RUN + 1))
_WSP_RUN = re.compile(rb"[ \t]+")
_ANY_WSP = re.compile(rb"[ \t\r\n]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_LABEL = rb"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(_LABEL + rb"(\." + _LABEL + rb")*")


class Unparseable(ValueError):
    """dkimpy cannot be given this message; the text is safe to show and log."""


class _DebugOnly(logging.LoggerAdapter):
    """dkimpy logs what hostile input did to it at ERROR; here that is debugging detail."""

    def log(self, level, msg, *args, **kwargs):
        super().log(logging.DEBUG, msg, *args, **kwargs)


DKIMPY_LOG = _DebugOnly(logging.getLogger(__name__ + ".dkimpy"), {})


@dataclass
class Parsed:
    """A message as dkimpy parsed it; the body with CRLF line ends, as dkimpy hashes it."""

    dkim: dkim.DKIM
    body: bytes

    @functools.cached_property
    def relaxed_body(self) -> bytes:
        """The body with each white-space run made one space: what "relaxed" hashes the same."""
        if b"\t" not in self.body and b"  " not in self.body:
            return self.body
        return _WSP_RUN.sub(b" ", self.body)


def split(message: bytes) -> tuple[bytes, bytes]:
    """The header section and the body, up to and after the first empty line (CRLF or LF).

    Raises Unparseable if the header section is beyond MAX_HEADER_BYTES or MAX_HEADER_LINES.
    """
    if message.startswith((b"\n", b"\r\n")):
        return b"", message[message.index(b"\n") + 1 :]
    empty = _EMPTY_LINE.search(message, 0, MAX_HEADER_BYTES + 3)
    head, body = (message[: empty.start() + 1], message[empty.end() :]) if empty else (message, b"")
    if len(head) > MAX_HEADER_BYTES:
        raise Unparseable("Message header too large to check DKIM")
    if head.count(b"\n") > MAX_HEADER_LINES:
        raise Unparseable("Message header has too many lines to check DKIM")
    return head, body


def parse(message: bytes) -> Parsed:
    """Parse ``message`` (CRLF or LF line ends) for dkimpy; raise Unparseable."""
    head, body = split(message)
    try:
        parsed = dkim.DKIM(head, logger=DKIMPY_LOG)
    # a continuation line before the first field makes dkimpy index an empty list
    except (dkim.MessageFormatError, IndexError):
        raise Unparseable("Malformed message header") from None
    # dkimpy would split the whole message into lines and join the body's with CRLF: the same
    # result, at a fraction of the cost
    return Parsed(parsed, body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature field of the From: domain; ``problem`` says why it cannot verify."""

    index: int  # dkimpy's idx: the position among all DKIM-Signature fields, top first
    selector: str
    domain: str
    relaxed_body: bool
    problem: str = ""

    @property
    def key_name(self) -> str:
        """RFC 6376 §3.6.2.1: where the key is published."""
        return f"{self.selector}._domainkey.{self.domain}"


def signatures(parsed: Parsed, domain: str) -> tuple[int, list[Signature]]:
    """How many DKIM-Signature fields there are, and the first few with ``d=domain``.

    ``domain`` is lowercase ASCII (A-labels); d= is compared case-insensitively, as DNS names are
    (RFC 4343).
    """
    fields = [v for name, v in parsed.dkim.headers if name.lower() == b"dkim-signature"]
    found: list[Signature] = []
    if not domain:
        return len(fields), found
    for index, value in enumerate(fields):
        try:
            tags = parse_tag_value(value)  # dkimpy parses the same folded value this way
        except InvalidTagValueList:
            continue
        if tags.get(b"d", b"").lower() != domain.encode("ascii"):
            continue
        found.append(_signature(index, domain, tags, value))
        if len(found) == MAX_SIGNATURES:
            break
    return len(fields), found


def is_dns_name(name: bytes) -> bool:
    """Dot-separated labels (RFC 1035 §2.3.1, and "_"): a domain, or a selector (RFC 6376 §3.1)."""
    return len(name) <= 253 and _DNS_NAME.fullmatch(name) is not None


def _signature(index: int, domain: str, tags: dict[bytes, bytes], value: bytes) -> Signature:
    selector = tags.get(b"s", b"")
    if len(selector) + len(domain) > 240 or not is_dns_name(selector):
        return Signature(index, "?", domain, False, "bad s=")
    canon = tags.get(b"c", b"simple/simple").split(b"/")  # RFC 6376 §3.5: body defaults to simple
    relaxed = len(canon) == 2 and canon[1] == b"relaxed"
    problem = _tag_problem(tags, value)
    if not problem and (len(canon) > 2 or not set(canon) <= set(CANONICALIZATIONS)):
        problem = "bad c="
    return Signature(index, selector.decode("ascii"), domain, relaxed, problem)


def _tag_problem(tags: dict[bytes, bytes], value: bytes) -> str:
    if len(value) > MAX_SIGNATURE_BYTES or _LONG_WSP.search(value):
        return "field too long or too much white space"
    if tags.get(b"v") != b"1" or tags.get(b"a") not in ALGORITHMS:
        return "not v=1 with a supported a="
    if b"l" in tags:  # RFC 6376 §8.2: a body length limit lets anyone append to the body
        return "l= is not accepted"
    for name in (b"b", b"bh"):
        if _BASE64.fullmatch(_ANY_WSP.sub(b"", tags.get(name, b""))) is None:
            return f"{name.decode()}= is not base64"
    signed = [n.lower() for n in _ANY_WSP.sub(b"", tags.get(b"h", b"")).split(b":")]
    if len(signed) > MAX_SIGNED_NAMES:
        return "too many fields in h="
    if b"from" not in signed:  # RFC 6376 §5.4: the From header field MUST be signed
        return "From not in h="
    return ""


def verify_one(parsed: Parsed, sig: Signature, key: bytes) -> str:
    """Check ``sig`` with the TXT record ``key``: "" if it verifies, else why not."""
    if sig.problem:
        return sig.problem
    wanted = sig.key_name.lower().encode("ascii")

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return key if name.lower().rstrip(b".") == wanted else None

    parsed.dkim.body = parsed.relaxed_body if sig.relaxed_body else parsed.body
    try:
        verified = parsed.dkim.verify(idx=sig.index, dnsfunc=dnsfunc)
    # dkimpy answers hostile signatures and key records with its own exceptions and with
    # builtin ones (KeyError, IndexError, binascii.Error, ...); each means "does not verify"
    except Exception as exc:
        log.debug("DKIM signature %d of %s: %s", sig.index, sig.domain, type(exc).__name__)
        return f"dkimpy: {type(exc).__name__}"
    return "" if verified else "signature does not match the key"
