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

PKESK, SKESK, SEIPD = 1, 3, 18
# the versions of RFC 9580 §5.1 (PKESK) and §5.3 (SKESK)
SESSION_KEY_VERSIONS = {PKESK: (3, 6), SKESK: (4, 6)}
SEIPD_VERSIONS = (1, 2)  # RFC 9580 §5.13
# A message to many recipients has one session key packet each; no chat needs more.
MAX_SESSION_KEYS = 1000
# RFC 9580 §4.2.1.4: the first partial body chunk is at least 512 octets.
MIN_FIRST_PARTIAL = 512

BEGIN = "-----BEGIN PGP MESSAGE-----"
END = "-----END PGP MESSAGE-----"
_HEADER = re.compile(r"([!-9;-~]+): (.*)")  # RFC 9580 §6.2: "Key: Value"
_CRC24_INIT = 0xB704CE
_CRC24_POLY = 0x1864CFB


def _crc24_table() -> tuple[int, ...]:
    table = []
    for octet in range(256):
        crc = octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


class NotEncrypted(ValueError):
    """The data is not one OpenPGP encrypted message; the message says why."""


@dataclass(frozen=True)
class Armored:
    data: bytes
    headers: tuple[tuple[str, str], ...]


def crc24(data: bytes) -> int:
    """RFC 9580 §6.1's CRC-24 of ``data``."""
    crc, table = _CRC24_INIT, _CRC24_TABLE
    for octet in data:  # one table step per octet: the bitwise definition, eight bits at once
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ octet]
    return crc


def dearmor(text: str) -> Armored:
    """The packets and armor headers of one ASCII-armored PGP MESSAGE (RFC 9580 §6.2).

    The CRC-24 line is optional (RFC 9580 §6.1: Sequoia leaves it out); when present it must
    match. Only white space may surround the armor.
    """
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    start = 0
    while start < len(lines) and not lines[start]:
        start += 1
    if start == len(lines) or lines[start] != BEGIN:
        raise NotEncrypted("no '-----BEGIN PGP MESSAGE-----' line")
    if lines[-1] != END or len(lines) - start < 3:
        raise NotEncrypted("the armor does not end with '-----END PGP MESSAGE-----'")
    body = lines[start + 1 : -1]
    headers = []
    while body and body[0]:
        match = _HEADER.fullmatch(body.pop(0))
        if match is None:
            raise NotEncrypted("bad armor header line")
        headers.append((match.group(1), match.group(2)))
    if not body:
        raise NotEncrypted("no blank line after the armor headers")
    body.pop(0)
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()[1:]
    data = _decode_base64("".join(body))
    if checksum is not None:
        crc = _decode_base64(checksum)
        if len(crc) != 3 or int.from_bytes(crc, "big") != crc24(data):
            raise NotEncrypted("armor checksum does not match")
    return Armored(data, tuple(headers))


def _decode_base64(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
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
        while partial:  # each chunk is followed by the next length; the last one is whole
            pos += length
            if pos > len(data):
                raise NotEncrypted("truncated packet body")
            length, pos, partial = _length(data, pos, True, 0)
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
