"""What outgoing mail must not tell the recipient's server: the one rewrite of its header fields.

The submission smtpd's ``Received:`` field names the client's IP address, and earlier hops may
add more; none of them is needed past this relay, so every ``Received:`` field goes. The
visible ``Subject:`` becomes ``[...]``: chat clients keep the real subject inside the encrypted
part (Autocrypt's protected headers), so the outer one only leaks. The exception is the
Autocrypt Setup Message, whose subject clients look for (the caller says so).

Only the header block changes, on its raw bytes: everything else, including every other field
and its folding, stays byte for byte, since the body is signed or encrypted and the email
package would re-serialize what it touches. This runs before DKIM signing.
"""

from __future__ import annotations

import re

HIDDEN_SUBJECT = b"[...]"
REMOVED_FIELDS = (b"received",)
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")
_BLANK_LINE = re.compile(rb"(?:^|\n)(\r?\n)")


def head_end(message: bytes) -> int:
    """Where the header block ends: the start of the first empty line (or the end)."""
    match = _BLANK_LINE.search(message)
    return len(message) if match is None else match.start(1)


def _field_name(line: bytes) -> bytes | None:
    """The lowercase name of the field that ``line`` starts, None for a continuation line."""
    if line[:1] in (b" ", b"\t"):
        return None
    name, colon, _ = line.partition(b":")
    return name.strip().lower() if colon else b""


def rewrite_head(header_block: bytes, *, keep_subject: bool = False) -> bytes:
    """``header_block`` without Received fields and with the Subject ``[...]`` (see the module).

    Lines that are no field are kept as they are, and so is every field not named here.
    """
    out: list[bytes] = []
    name: bytes | None = b""
    for line in _LINES.findall(header_block):
        field = _field_name(line)
        if field is not None:
            name = field
            if name == b"subject" and not keep_subject:
                ending = b"\r\n" if line.endswith(b"\r\n") else line[len(line.rstrip(b"\r\n")) :]
                out.append(b"Subject: " + HIDDEN_SUBJECT + ending)
                continue
        if name in REMOVED_FIELDS or (name == b"subject" and not keep_subject):
            continue  # the field, or a continuation line of it
        out.append(line)
    return b"".join(out)


def rewrite(message: bytes, *, keep_subject: bool = False) -> bytes:
    """The whole ``message`` with its header block rewritten; the body is not touched."""
    end = head_end(message)
    return rewrite_head(message[:end], keep_subject=keep_subject) + message[end:]
