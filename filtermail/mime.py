"""The MIME side of filtermail's decision: is a message one OpenPGP encrypted message? Pure.

RFC 3156 §4: an encrypted message is ``multipart/encrypted`` with
``protocol="application/pgp-encrypted"`` and exactly two parts: ``application/pgp-encrypted``
whose body is ``Version: 1``, then ``application/octet-stream`` holding the armored message,
which ``filtermail.openpgp`` checks. Besides that, only a few unencrypted shapes pass, each
recognised here: a Secure-Join request (Delta Chat's handshake message, sent before the peers
have each other's keys: one text/plain body that is nothing but its own Secure-Join header
line), an Autocrypt Setup Message to oneself, and a bounce from a mailer daemon.

``check_encrypted_bytes`` is ``check_encrypted(parse(data))`` without building the whole
message: the email package reads a body line by line in Python (milliseconds per megabyte),
so the common shape is split at its boundary here, as the email package's feed parser splits
it, and anything unusual goes to the email package after all. ``head`` likewise parses only
the header block (compat32: header objects of ``policy.default`` cost tens of microseconds
each). Addresses still come from the header registry of ``policy.default``, which parses IP
literals (``user@[192.0.2.1]``); ``email.utils.parseaddr`` returns nothing for them on some
Pythons.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser

from .openpgp import NotEncrypted, check_armored_message

SECURE_JOIN_REQUESTS = ("vc-request", "vg-request")
SETUP_MESSAGE_SUBJECT = "Autocrypt Setup Message"  # Autocrypt Level 1 §4.4; clients match it
MAILER_DAEMON = "mailer-daemon"
# A header block whose every line is a field or a continuation, as the feed parser's headerRE
# reads it (RFC 5322 §2.2 field names: printable ASCII but the colon), then the end of the
# block. Anything else (an mbox "From " line, a lone CR, a line that is no field) is left to
# the email package.
_HEAD = re.compile(rb"(?:[!-9;-~]+:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)*")
_PLAIN_ENCODINGS = ("", "7bit", "8bit", "binary")  # RFC 2045 §6: bodies taken as they are
_HEADER_PARSER = BytesHeaderParser(policy=policy.compat32)
_FOLD = re.compile(r"\r\n|\r|\n")
# one header field of a clean block: name, then the value from its first non-blank character
# (compat32 strips blanks after the colon) through its continuation lines, line ends included
_FIELD = re.compile(rb"([!-9;-~]+):[ \t]*([^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)")
_CONTENT_FIELDS = (b"content-type", b"content-transfer-encoding")
_LONE_CR = re.compile(rb"\r(?!\n)")
_DELIMITER_END = re.compile(rb"(--)?[ \t]*\r?(?:\n|\Z)")
# RFC 5322 §3.4: one mailbox whose addr-spec is a dot-atom at a dot-atom, bare or in angle
# brackets after a display name of atoms and plain quoted strings: what chat clients write in
# From:. Parsing it with the header registry costs about 0.1 ms; any other form (comments,
# IP literals, quoted local parts, groups, lists) still goes there.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
# possessive: the display name never backtracks (no regex blow-up on a long hostile one)
_PHRASE = r'(?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~ \t-]++|"[ !#-\[\]-~]*+")*+'
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:{_PHRASE}<({_DOT_ATOM}@{_DOT_ATOM})>|({_DOT_ATOM}@{_DOT_ATOM}))[ \t]*"
)


# The email package parses MIME header fields (Content-Type and its kin) in superlinear time and
# recursively (one level per nested comment): a few KB of hostile header would cost seconds or
# raise RecursionError. No client writes such a field longer than this, in any part.
MAX_MIME_FIELD = 2048
_MIME_FIELD = re.compile(rb"(?im)^content-[a-z0-9-]*[ \t]*:[^\n]*\n?(?:[ \t][^\n]*\n?)*")


def parse(data: bytes) -> EmailMessage:
    """The message in ``data`` (bytes as received, CRLF or LF line ends).

    Raises NotEncrypted for a message the email package cannot parse in bounded time and depth
    (see MAX_MIME_FIELD): such a message is nothing filtermail lets through anyway.
    """
    for field in _MIME_FIELD.finditer(data):
        if len(field.group()) > MAX_MIME_FIELD:
            raise NotEncrypted(f"a MIME header field is longer than {MAX_MIME_FIELD} bytes")
    try:
        return BytesParser(policy=policy.default).parsebytes(data)  # type: ignore[return-value]
    except RecursionError:
        raise NotEncrypted("MIME structure nested too deeply") from None


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """(header block, body) if every line up to the first empty one is a header field line."""
    end = _HEAD.match(data).end()  # type: ignore[union-attr]  # matches the empty string
    if end == len(data):
        return data, b""
    if data.startswith(b"\r\n", end):
        return data[:end], data[end + 2 :]
    if data.startswith(b"\n", end):
        return data[:end], data[end + 1 :]
    return None


def head(data: bytes) -> Message:
    """The header fields of the message in ``data`` (compat32 values: raw, not decoded)."""
    split = split_head(data)
    if split is not None:
        return _HEADER_PARSER.parsebytes(split[0])
    return BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True)


def simple_mailbox(value: str) -> str | None:
    """The addr-spec of ``value`` if it is one plain mailbox (see ``_SIMPLE_MAILBOX``)."""
    match = _SIMPLE_MAILBOX.fullmatch(value)
    if match is None:
        return None
    addr = match.group(1) or match.group(2)
    # the header registry decodes what looks like an RFC 2047 encoded word even there
    return None if "=?" in addr else addr


def addresses(msg: Message, name: str) -> list[str]:
    """The lowercase addr-specs in header ``name`` (none if it is missing or unparseable)."""
    try:
        header = msg[name]
        if header is not None and not hasattr(header, "addresses"):  # a compat32 value
            value = _FOLD.sub("", str(header))
            simple = simple_mailbox(value)
            if simple is not None:
                return [simple.lower()]
            header = policy.default.header_factory(name, value)
        found = [] if header is None else [a.addr_spec for a in header.addresses]
    except (AttributeError, IndexError, TypeError, ValueError):
        return []
    return [addr.lower() for addr in found if "@" in addr]


def _text(value: object) -> str:
    return _FOLD.sub("", str(value)).strip()


def _ascii(payload: object, content_type: str) -> str:
    if not isinstance(payload, bytes):
        raise NotEncrypted(f"{content_type} part has no body")
    try:
        return payload.decode("ascii")
    except UnicodeDecodeError:
        raise NotEncrypted(f"{content_type} part is not ASCII") from None


def _payload_text(part: Message) -> str:
    return _ascii(part.get_payload(decode=True), part.get_content_type())


def _check_version(text: str) -> None:
    if text.strip() != "Version: 1":
        raise NotEncrypted("the application/pgp-encrypted part is not 'Version: 1'")


def check_encrypted(msg: Message, *, outgoing: bool) -> None:
    """Raise NotEncrypted unless ``msg`` is one RFC 3156 encrypted message (see the module)."""
    if msg.get_content_type() != "multipart/encrypted":
        raise NotEncrypted(f"{msg.get_content_type()} is not multipart/encrypted")
    if msg.get_param("protocol") != "application/pgp-encrypted":
        raise NotEncrypted("multipart/encrypted without protocol application/pgp-encrypted")
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        raise NotEncrypted("multipart/encrypted must have exactly two parts")
    control, data = parts
    if control.get_content_type() != "application/pgp-encrypted":
        raise NotEncrypted("the first part is not application/pgp-encrypted")
    _check_version(_payload_text(control))
    if data.get_content_type() != "application/octet-stream":
        raise NotEncrypted("the second part is not application/octet-stream")
    check_armored_message(_payload_text(data), allow_headers=not outgoing)


def check_encrypted_bytes(data: bytes, *, outgoing: bool, headers: Message | None = None) -> None:
    """``check_encrypted(parse(data), outgoing=outgoing)``, without parsing a large body.

    ``headers`` is ``head(data)``, if the caller has it already.
    """
    split = split_head(data)
    if split is None:
        check_encrypted(parse(data), outgoing=outgoing)
        return
    msg = _HEADER_PARSER.parsebytes(split[0]) if headers is None else headers
    if msg.get_content_type() != "multipart/encrypted":
        raise NotEncrypted(f"{msg.get_content_type()} is not multipart/encrypted")
    parts = _two_plain_parts(msg, split[1])
    if parts is None:  # an unusual shape: let the email package say what it is
        check_encrypted(parse(data), outgoing=outgoing)
        return
    (ctype0, body0), (ctype1, body1) = parts
    _check_version(_ascii(body0, ctype0))
    check_armored_message(_ascii(body1, ctype1), allow_headers=not outgoing)


def _two_plain_parts(msg: Message, body: bytes) -> list[tuple[str, bytes]] | None:
    """The RFC 3156 parts (type, body) as the feed parser would split them, or None if unusual."""
    boundary = msg.get_boundary()
    if msg.get_param("protocol") != "application/pgp-encrypted" or not boundary:
        return None
    if not boundary.isascii():  # RFC 2046 §5.1.1: bcharsnospace are ASCII
        return None
    if _LONE_CR.search(body):  # the feed parser also ends lines at a lone CR
        return None
    bodies = _split_multipart(body, boundary.encode("ascii"))
    if bodies is None or len(bodies) != 2:
        return None
    parts = []
    types = ("application/pgp-encrypted", "application/octet-stream")
    for part, expected in zip(bodies, types, strict=True):
        split = split_head(part)
        if split is None:
            return None
        fields = _content_fields(split[0])
        if fields is None:
            return None
        content_type, encoding = fields
        if content_type != expected or encoding not in _PLAIN_ENCODINGS:
            return None
        parts.append((expected, split[1]))
    return parts


def _content_fields(block: bytes) -> tuple[str, str] | None:
    """(content type, transfer encoding) of a ``split_head`` header block, as the compat32 header
    parser reads them (``get_content_type()``, lowercased ``Content-Transfer-Encoding``), without
    building a message: a part's few header lines cost more through the feed parser than all the
    rest of the check of a small message. None if the block is not ASCII."""
    if not block.isascii():
        return None
    values: dict[bytes, str] = {}
    for field in _FIELD.finditer(block):  # the block is nothing but such fields (split_head)
        name = field.group(1).lower()
        if name in _CONTENT_FIELDS and name not in values:  # the first one counts
            values[name] = field.group(2).decode("ascii").rstrip("\r\n")
    content_type = values.get(b"content-type", "").partition(";")[0].strip().lower()
    if content_type.count("/") != 1:  # RFC 2045 §5.2: missing or invalid is text/plain
        content_type = "text/plain"
    return content_type, values.get(b"content-transfer-encoding", "").strip().lower()


def _delimiters(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, close?) of each delimiter line: ``--boundary``, maybe ``--``, blanks, EOL."""
    dash = b"--" + boundary
    at = 0 if body.startswith(dash) else body.find(b"\n" + dash) + 1
    if at == 0 and not body.startswith(dash):
        return
    while True:
        match = _DELIMITER_END.match(body, at + len(dash))
        if match:
            yield at, match.end(), bool(match.group(1))
        at = body.find(b"\n" + dash, at) + 1
        if at == 0:
            return


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes] | None:
    """The part bodies between delimiter lines (RFC 2046 §5.1.1), None without a close one.

    As in the feed parser: a delimiter line may end in blanks, delimiter lines in a row make
    no empty parts, and the line break before a delimiter belongs to the delimiter.
    """
    parts: list[bytes] = []
    start = None  # where the current part's content begins
    for at, end, close in _delimiters(body, boundary):
        if start is not None and at > start:  # one copy of the part, not two
            parts.append(body[start : at - (2 if body.endswith(b"\r\n", start, at) else 1)])
        if close:
            return parts if start is not None else None
        start = end
    return None


def is_secure_join_request(msg: Message) -> bool:
    """Delta Chat's first handshake message: one text/plain body that is just its header line.

    The body may stand alone or be the only part of a multipart message (as Delta Chat sends
    it); either way it can say nothing but the request.
    """
    values = [_text(value).lower() for value in msg.get_all("Secure-Join") or []]
    if len(values) != 1 or values[0] not in SECURE_JOIN_REQUESTS:
        return False
    body = msg
    if msg.is_multipart():
        parts = msg.get_payload()
        if not isinstance(parts, list) or len(parts) != 1:
            return False
        body = parts[0]
    if body.is_multipart() or body.get_content_type() != "text/plain":
        return False
    try:
        text = _payload_text(body)
    except NotEncrypted:
        return False
    return text.strip().lower() == f"secure-join: {values[0]}"


def is_autocrypt_setup_message(msg: Message, mail_from: str, rcpts: Iterable[str]) -> bool:
    """An Autocrypt Setup Message (Autocrypt Level 1 §4.4) that goes only to its sender.

    Its body is the secret key, encrypted with a code the user types on the other device; the
    subject is what clients look for, so it must stay as it is.
    """
    subjects = msg.get_all("Subject") or []
    sender = mail_from.lower()
    targets = [rcpt.lower() for rcpt in rcpts]
    return (
        msg.get_content_type() == "multipart/mixed"
        and len(subjects) == 1
        and _text(subjects[0]) == SETUP_MESSAGE_SUBJECT
        and bool(sender)
        and bool(targets)
        and all(rcpt == sender for rcpt in targets)
    )


def is_bounce(msg: Message) -> bool:
    """A delivery report (RFC 3464 in RFC 6522's multipart/report) from a mailer daemon.

    Such reports come unencrypted from any mail server; RFC 3834 §5's Auto-Submitted header
    (anything but "no") marks them as machine-made.
    """
    senders = addresses(msg, "From")
    auto = [
        _text(value).split(";")[0].strip().lower() for value in msg.get_all("Auto-Submitted") or []
    ]
    return (
        msg.get_content_type() == "multipart/report"
        and len(senders) == 1
        and senders[0].rpartition("@")[0] == MAILER_DAEMON
        and len(auto) == 1
        and auto[0] not in ("", "no")
    )
