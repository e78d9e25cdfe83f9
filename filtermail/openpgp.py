"""Is this ASCII-armored OpenPGP data an encrypted message, and nothing else? Pure functions.

filtermail passes only mail whose body is an OpenPGP *encrypted* message: zero or more
public- or symmetric-key encrypted session key packets (PKESK, tag 1; SKESK, tag 3), then
exactly one Symmetrically Encrypted and Integrity Protected Data packet (SEIPD, tag 18, version
1 or RFC 9580's version 2) that ends the stream. A literal, compressed or unprotected data packet
anywhere, or anything after the SEIPD, means the mail could carry readable content.

Nothing here decrypts or trusts the contents: it reads packet headers (RFC 9580 §4.2) and the
first octets of packet bodies only. Work is linear in the input: every loop step consumes input,
and there is no recursion.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from .crc24 import crc24

PKESK, SKESK, SEIPD = 1, 3, 18
# the versions of RFC 9580 §5.1 (PKESK) and §5.3 (SKESK)
SESSION_KEY_VERSIONS = {PKESK: (3, 6), SKESK: (4, 6)}
SEIPD_VERSIONS = (1, 2)  # RFC 9580 §5.13
# A message to many recipients has one session key packet each; no chat needs more.
MAX_SESSION_KEYS = 1000
# RFC 9580 §4.2.1.4: the first partial body chunk is at least 512 octets.
MIN_FIRST_PARTIAL = 512
# ... and each chunk's length is one octet 224..254 meaning 2**(octet & 0x1F) octets. The chunks
# after the first may be one octet long; the regex engine skips a run of them in C, five times
# faster than a Python loop step per chunk (bench/filtermail_check_bench.py, Figure 2).
_PARTIAL_CHUNKS = re.compile(
    b"(?:" + b"|".join(bytes([224 + k]) + b".{%d}" % (1 << k) for k in range(31)) + b")*+",
    re.DOTALL,
)

BEGIN = "-----BEGIN PGP MESSAGE-----"
END = "-----END PGP MESSAGE-----"
_HEADER = re.compile(r"([!-9;-~]+): (.*)")  # RFC 9580 §6.2: "Key: Value"
# RFC 9580 §6.2.2 defines five header keys and clients write one or two; the bound keeps a
# hostile header block from costing a Python loop step per line.
MAX_ARMOR_HEADERS = 64
_TRAILING = " \t\r"  # white space that may end any armor line (and CRLF line ends)


class NotEncrypted(ValueError):
    """The data is not one OpenPGP encrypted message; the message says why."""


@dataclass(frozen=True)
class Armored:
    data: bytes
    headers: tuple[tuple[str, str], ...]


def dearmor(text: str) -> Armored:
    """The packets and armor headers of one ASCII-armored PGP MESSAGE (RFC 9580 §6.2).

    The CRC-24 line is optional (RFC 9580 §6.1: Sequoia leaves it out); when present it must
    match. Only white space may surround the armor, and only white space may end a line.
    The cost is a few passes of C code over the text, not a Python step per line.
    """
    text = text.strip(_TRAILING + "\n")
    first_end, last_start = text.find("\n"), text.rfind("\n") + 1
    if (text[:first_end] if first_end >= 0 else text).rstrip(_TRAILING) != BEGIN:
        raise NotEncrypted("no '-----BEGIN PGP MESSAGE-----' line")
    if text[last_start:] != END or last_start <= first_end + 1:
        raise NotEncrypted("the armor does not end with '-----END PGP MESSAGE-----'")
    headers, pos = _armor_headers(text, first_end + 1, last_start)
    body = text[pos : last_start - 1].rstrip(_TRAILING + "\n")
    checksum = None
    last_line = body.rfind("\n") + 1
    if body.startswith("=", last_line):
        checksum, body = body[last_line + 1 :], body[:last_line]
    data = _decode_base64(_base64_text(body))
    if checksum is not None:
        crc = _decode_base64(checksum.encode("ascii", "replace"))
        if len(crc) != 3 or int.from_bytes(crc, "big") != crc24(data):
            raise NotEncrypted("armor checksum does not match")
    return Armored(data, tuple(headers))


def _armor_headers(text: str, pos: int, end: int) -> tuple[list[tuple[str, str]], int]:
    """The "Key: Value" lines from ``pos`` to the first blank line, and the position after it."""
    headers = []
    while pos < end:
        line_end = text.find("\n", pos, end)  # found: the text has a line end before ``end``
        line = text[pos:line_end].rstrip(_TRAILING)
        pos = line_end + 1
        if not line:
            return headers, pos
        match = _HEADER.fullmatch(line)
        if match is None:
            raise NotEncrypted("bad armor header line")
        if len(headers) == MAX_ARMOR_HEADERS:
            raise NotEncrypted(f"more than {MAX_ARMOR_HEADERS} armor headers")
        headers.append((match.group(1), match.group(2)))
    raise NotEncrypted("no blank line after the armor headers")


def _base64_text(body: str) -> bytes:
    """The base64 lines of ``body`` joined: without CRs, line ends and trailing white space."""
    try:
        raw = body.encode("ascii")
    except UnicodeEncodeError:
        raise NotEncrypted("armor is not valid base64") from None
    joined = raw.translate(None, b"\r\n")
    if b" " in joined or b"\t" in joined:  # rare: white space before a line end; still linear
        lines = raw.translate(None, b"\r").split(b"\n")
        joined = b"".join(line.rstrip(b" \t") for line in lines)
    return joined


def _decode_base64(text: bytes) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        raise NotEncrypted("armor is not valid base64") from None


@dataclass(frozen=True)
class Packet:
    tag: int
    first: int | None  # the body's first octet (a version number), None if the body is empty


def _length(data: bytes, pos: int, new_format: bool, length_type: int) -> tuple[int, int, bool]:
    """(body length, position after the length octets, partial?) of a packet header."""
    if not new_format:
        if length_type == 3:  # indeterminate: to the end of the data
            return len(data) - pos, pos, False
        size = (1, 2, 4)[length_type]
        if pos + size > len(data):
            raise NotEncrypted("truncated packet header")
        return int.from_bytes(data[pos : pos + size], "big"), pos + size, False
    if pos >= len(data):
        raise NotEncrypted("truncated packet header")
    first = data[pos]
    if first < 192:
        return first, pos + 1, False
    if first < 224:
        if pos + 2 > len(data):
            raise NotEncrypted("truncated packet header")
        return ((first - 192) << 8) + data[pos + 1] + 192, pos + 2, False
    if first == 255:
        if pos + 5 > len(data):
            raise NotEncrypted("truncated packet header")
        return int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5, False
    return 1 << (first & 0x1F), pos + 1, True  # a partial body length (RFC 9580 §4.2.1.4)


def _last_chunk(data: bytes, pos: int) -> tuple[int, int]:
    """(start, length) of the last chunk of a partial-length body whose next length is at pos.

    Each chunk is followed by the next one's length; the last one has a whole length.
    """
    if pos > len(data):
        raise NotEncrypted("truncated packet body")  # the first chunk
    pos = _PARTIAL_CHUNKS.match(data, pos).end()  # type: ignore[union-attr]  # * matches ""
    if pos < len(data) and 224 <= data[pos] < 255:
        raise NotEncrypted("truncated packet body")  # a chunk longer than what is left
    length, pos, _ = _length(data, pos, True, 0)
    return pos, length


def _packet(data: bytes, pos: int) -> tuple[Packet, int]:
    """The packet at ``pos`` and the position after it."""
    octet = data[pos]
    if not octet & 0x80:
        raise NotEncrypted("not an OpenPGP packet header")
    new_format = bool(octet & 0x40)
    tag = octet & 0x3F if new_format else (octet >> 2) & 0x0F
    length, pos, partial = _length(data, pos + 1, new_format, octet & 0x03)
    first = data[pos] if pos < len(data) and length else None
    if partial:
        if tag != SEIPD:
            raise NotEncrypted(f"partial body length in a packet of tag {tag}")
        if length < MIN_FIRST_PARTIAL:
            raise NotEncrypted("first partial body chunk shorter than 512 octets")
        pos, length = _last_chunk(data, pos + length)
    end = pos + length
    if end > len(data):
        raise NotEncrypted("truncated packet body")
    return Packet(tag, first), end


def check_packets(data: bytes) -> None:
    """Raise NotEncrypted unless ``data`` is (PKESK | SKESK)* SEIPD and nothing more."""
    pos = keys = 0
    while pos < len(data):
        packet, pos = _packet(data, pos)
        if packet.tag == SEIPD:
            if packet.first not in SEIPD_VERSIONS:
                raise NotEncrypted(f"SEIPD version {packet.first} is not 1 or 2")
            if pos != len(data):
                raise NotEncrypted("data after the encrypted data packet")
            return
        versions = SESSION_KEY_VERSIONS.get(packet.tag)
        if versions is None:
            raise NotEncrypted(f"packet of tag {packet.tag} in an encrypted message")
        if packet.first not in versions:
            raise NotEncrypted(f"session key packet of version {packet.first}")
        keys += 1
        if keys > MAX_SESSION_KEYS:
            raise NotEncrypted(f"more than {MAX_SESSION_KEYS} session key packets")
    raise NotEncrypted("no encrypted data packet")


def check_armored_message(text: str, *, allow_headers: bool) -> None:
    """Raise NotEncrypted unless ``text`` is one armored OpenPGP encrypted message.

    ``allow_headers``: armor headers such as ``Version:`` or ``Comment:`` name the client that
    wrote the message; outgoing mail must not carry them, incoming mail may.
    """
    armored = dearmor(text)
    if armored.headers and not allow_headers:
        names = ", ".join(sorted({name for name, _ in armored.headers}))
        raise NotEncrypted(f"armor headers ({names}) would reveal the client")
    check_packets(armored.data)
