"""filtermail.openpgp: which armored OpenPGP data counts as an encrypted message, and nothing else.

Hand-built packet streams pin the grammar (RFC 9580 §4.2 headers, §6 armor); messages made by
GnuPG check it against a real implementation; Hypothesis checks that no input makes the check
raise anything but NotEncrypted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtermail.openpgp import (
    BEGIN,
    END,
    Armored,
    NotEncrypted,
    check_armored_message,
    check_packets,
    crc24,
    dearmor,
)

# -- building packets ----------------------------------------------------------------------------


def new_packet(tag: int, body: bytes) -> bytes:
    """A new-format packet (RFC 9580 §4.2.1) with the shortest length encoding."""
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        n -= 192
        length = bytes([(n >> 8) + 192, n & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def old_packet(tag: int, body: bytes, length_type: int | None = None) -> bytes:
    """An old-format packet (RFC 9580 §4.2.2), as GnuPG 2.2 writes PKESKs."""
    if length_type is None:
        length_type = 0 if len(body) < 256 else 1 if len(body) < 65536 else 2
    size = {0: 1, 1: 2, 2: 4, 3: 0}[length_type]
    length = len(body).to_bytes(size, "big") if size else b""
    return bytes([0x80 | (tag << 2) | length_type]) + length + body


def partial_packet(tag: int, body: bytes, chunk_power: int = 9) -> bytes:
    """A new-format packet whose body comes in partial chunks of 2**chunk_power octets."""
    chunk = 1 << chunk_power
    out = bytes([0xC0 | tag])
    rest = body
    while len(rest) > chunk:
        out += bytes([224 + chunk_power]) + rest[:chunk]
        rest = rest[chunk:]
    return out + new_packet(tag, rest)[1:]


PKESK3 = new_packet(1, b"\x03" + os.urandom(40))
SKESK4 = new_packet(3, b"\x04\x09\x03" + os.urandom(12))
SEIPD1 = new_packet(18, b"\x01" + os.urandom(100))
SEIPD2 = new_packet(18, b"\x02\x09\x02\x10" + os.urandom(100))


def armor(data: bytes, headers: str = "", crc: bool = True, width: int = 64) -> str:
    b64 = base64.b64encode(data).decode()
    lines = [BEGIN, *(headers.splitlines()), ""]
    lines += [b64[i : i + width] for i in range(0, len(b64), width)]
    if crc:
        lines.append("=" + base64.b64encode(crc24(data).to_bytes(3, "big")).decode())
    return "\n".join([*lines, END]) + "\n"


# -- what passes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        SEIPD1,
        SEIPD2,
        PKESK3 + SEIPD1,
        SKESK4 + SEIPD1,
        PKESK3 + PKESK3 + SKESK4 + SEIPD2,
        new_packet(1, b"\x06" + os.urandom(60)) + new_packet(3, b"\x06" + os.urandom(30)) + SEIPD2,
        old_packet(1, b"\x03" + os.urandom(40)) + SEIPD1,  # GnuPG 2.2's PKESK
        old_packet(1, b"\x03" + os.urandom(300)) + SEIPD1,  # two length octets
        old_packet(1, b"\x03" + os.urandom(40), length_type=2) + SEIPD1,  # four
        new_packet(1, b"\x03" + os.urandom(9000)) + new_packet(18, b"\x01" + os.urandom(70000)),
        PKESK3 + partial_packet(18, b"\x01" + os.urandom(5000)),
        PKESK3 + partial_packet(18, b"\x01" + os.urandom(4096), chunk_power=10),  # ends on 0
    ],
)
def test_session_keys_then_one_seipd_pass(stream):
    check_packets(stream)
    check_armored_message(armor(stream), allow_headers=False)


def test_armor_without_checksum_passes():
    """RFC 9580 §6.1: the CRC is optional, and Sequoia leaves it out."""
    check_armored_message(armor(PKESK3 + SEIPD1, crc=False), allow_headers=False)


def test_armor_tolerates_crlf_and_surrounding_blank_lines():
    text = "\r\n\r\n" + armor(PKESK3 + SEIPD1).replace("\n", "\r\n") + "\r\n \r\n"
    check_armored_message(text, allow_headers=False)


def test_armor_headers_pass_only_where_allowed():
    text = armor(PKESK3 + SEIPD1, headers="Version: GnuPG v2\nComment: https://gnupg.org")
    check_armored_message(text, allow_headers=True)  # incoming: other clients' business
    with pytest.raises(NotEncrypted, match="Comment, Version"):
        check_armored_message(text, allow_headers=False)  # outgoing: would reveal the client
    assert dearmor(text).headers == (("Version", "GnuPG v2"), ("Comment", "https://gnupg.org"))


# -- what is refused -----------------------------------------------------------------------------

LITERAL = new_packet(11, b"b\x00\x00\x00\x00\x00hello")
COMPRESSED = new_packet(8, b"\x01" + os.urandom(30))
SED = new_packet(9, os.urandom(40))  # encrypted without integrity protection


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (b"", "no encrypted data packet"),
        (PKESK3, "no encrypted data packet"),
        (LITERAL, "tag 11"),
        (COMPRESSED, "tag 8"),
        (SED, "tag 9"),
        (PKESK3 + LITERAL, "tag 11"),
        (PKESK3 + SEIPD1 + LITERAL, "after the encrypted data"),
        (PKESK3 + SEIPD1 + SEIPD1, "after the encrypted data"),
        (SEIPD1 + b"\x00", "after the encrypted data"),
        (PKESK3 + SEIPD1[:-1], "truncated"),
        (PKESK3[:1], "truncated packet header"),
        (new_packet(18, b"\x03" + os.urandom(20)), "SEIPD version 3"),
        (new_packet(18, b""), "SEIPD version None"),
        (new_packet(1, b"\x02" + os.urandom(20)) + SEIPD1, "version 2"),
        (new_packet(20, b"\x01" + os.urandom(20)), "tag 20"),  # LibrePGP's OCB packet
        (new_packet(10, b"PGP") + SEIPD1, "tag 10"),
        (old_packet(11, b"b\x00\x00\x00\x00\x00hi", length_type=3), "tag 11"),  # to the end
        (b"\x01\x02\x03", "not an OpenPGP packet"),
        (partial_packet(1, b"\x03" + os.urandom(1000)) + SEIPD1, "partial body length in"),
        (partial_packet(18, b"\x01" + os.urandom(300), chunk_power=7), "shorter than 512"),
        (PKESK3 + partial_packet(18, b"\x01" + os.urandom(5000))[:-10], "truncated"),
        (PKESK3 * 1001 + SEIPD1, "more than 1000"),
    ],
)
def test_anything_else_is_refused_with_the_reason(stream, why):
    with pytest.raises(NotEncrypted, match=why):
        check_packets(stream)
    with pytest.raises(NotEncrypted):
        check_armored_message(armor(stream), allow_headers=True)


def _with_wrong_crc(data: bytes) -> str:
    wrong = base64.b64encode(((crc24(data) + 1) & 0xFFFFFF).to_bytes(3, "big")).decode()
    return armor(data, crc=False).replace("\n" + END, f"\n={wrong}\n{END}")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no '-----BEGIN"),
        ("hello\n" + armor(SEIPD1), "no '-----BEGIN"),
        (armor(SEIPD1) + "trailing text\n", "does not end"),
        (armor(SEIPD1).replace(END, ""), "does not end"),
        (armor(SEIPD1).replace("MESSAGE", "SIGNATURE"), "no '-----BEGIN"),
        (BEGIN + "\n" + END + "\n", "does not end"),
        (armor(SEIPD1).replace("\n\n", "\nnot a header\n\n", 1), "bad armor header"),
        (armor(SEIPD1, headers="Version: x").replace("\n\n", "\n", 1), "armor header"),
        (armor(SEIPD1).replace("\n\n", "\n\n!!!!", 1), "base64"),
        (armor(SEIPD1, crc=False)[:-30] + "\n" + END, "base64|truncated"),
        (_with_wrong_crc(PKESK3 + SEIPD1), "checksum"),
        (armor(SEIPD1).replace("\n=", "\n=AAAAAA", 1), "checksum|base64"),
    ],
)
def test_bad_armor_is_refused(text, why):
    with pytest.raises(NotEncrypted, match=why):
        check_armored_message(text, allow_headers=True)


def test_white_space_is_allowed_only_at_line_ends():
    text = armor(PKESK3 + SEIPD1)
    check_armored_message(text.replace("\n", " \t\r\n"), allow_headers=False)
    check_armored_message(text.replace("\n" + END, "\n\n \n" + END), allow_headers=False)
    with pytest.raises(NotEncrypted, match="base64"):
        check_armored_message(text.replace("\n\n", "\n\nwV ", 1), allow_headers=False)


def test_more_than_64_armor_headers_are_refused():
    check_armored_message(armor(SEIPD1, headers="Comment: x\n" * 64), allow_headers=True)
    with pytest.raises(NotEncrypted, match="more than 64 armor headers"):
        check_armored_message(armor(SEIPD1, headers="Comment: x\n" * 65), allow_headers=True)


def test_one_octet_partial_chunks_after_the_first_pass():
    """RFC 9580 §4.2.1.4 constrains only the first chunk; the walk's worst case is legal."""
    seipd = b"\xd2\xe9\x01" + os.urandom(511) + b"\xe0\x00" * 5000 + b"\x01\x00"
    check_packets(PKESK3 + seipd)
    with pytest.raises(NotEncrypted, match="truncated packet header"):
        check_packets(PKESK3 + seipd[:-2])
    with pytest.raises(NotEncrypted, match="truncated packet body"):
        check_packets(PKESK3 + seipd[:300])  # in the first chunk
    with pytest.raises(NotEncrypted, match="truncated packet body"):  # a 1 KiB chunk, 100 left
        check_packets(PKESK3 + seipd[:-2] + b"\xea" + os.urandom(100))


def reference_dearmor(text: str) -> Armored:
    """What ``dearmor`` does, written one line at a time (the obvious and slow way)."""
    lines = [line.rstrip(" \t\r") for line in text.strip(" \t\r\n").split("\n")]
    if lines[0] != BEGIN or lines[-1] != END or len(lines) < 3:
        raise NotEncrypted("begin or end")
    body, headers = lines[1:-1], []
    while body and body[0]:
        key, sep, value = body.pop(0).partition(": ")
        if not sep or not re.fullmatch(r"[!-9;-~]+", key) or len(headers) == 64:
            raise NotEncrypted("header")
        headers.append((key, value))
    if not body:
        raise NotEncrypted("no blank line")
    body = body[1:]
    while body and not body[-1]:
        body.pop()
    checksum = body.pop()[1:] if body and body[-1].startswith("=") else None
    b64 = "".join(line.replace("\r", "").rstrip(" \t") for line in body)
    try:
        data = base64.b64decode(b64.encode("ascii"), validate=True)
        crc = None if checksum is None else base64.b64decode(checksum, validate=True)
    except (ValueError, UnicodeEncodeError):
        raise NotEncrypted("base64") from None
    if crc is not None and (len(crc) != 3 or int.from_bytes(crc, "big") != crc24(data)):
        raise NotEncrypted("checksum")
    return Armored(data, tuple(headers))


def outcome(call, text: str) -> Armored | None:
    try:
        return call(text)
    except NotEncrypted:
        return None


@given(
    data=st.binary(max_size=300),
    width=st.sampled_from([4, 60, 64, 76]),
    crc=st.booleans(),
    headers=st.sampled_from(["", "Version: x", "Comment: a\nComment: b"]),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from([" ", "\t", "\r", "\n", "\r\n", "="])),
        max_size=4,
    ),
)
def test_dearmor_agrees_with_the_line_by_line_definition(data, width, crc, headers, edits):
    text = armor(data, headers=headers, crc=crc, width=width)
    for where, what in edits:
        at = where % (len(text) + 1)
        text = text[:at] + what + text[at:]
    assert outcome(dearmor, text) == outcome(reference_dearmor, text)


# -- real OpenPGP implementations ----------------------------------------------------------------


def test_gnupg_encrypted_message_passes_and_its_plaintext_forms_do_not(gpg):
    body = b"hello, this is a chat message\n" * 20
    encrypted = gpg("--armor", "--encrypt", "--recipient", "alice@example.org", data=body)
    check_armored_message(encrypted.decode(), allow_headers=False)

    symmetric = gpg("--armor", "--symmetric", "--passphrase", "pw", data=body)
    check_armored_message(symmetric.decode(), allow_headers=False)

    signed = gpg("--armor", "--sign", data=body)  # readable by anyone: compressed + literal
    with pytest.raises(NotEncrypted, match="tag 8"):
        check_armored_message(signed.decode(), allow_headers=True)
    stored = gpg("--armor", "--store", data=body)  # a bare literal data packet
    with pytest.raises(NotEncrypted):
        check_armored_message(stored.decode(), allow_headers=True)


def test_gnupg_large_message_with_partial_lengths_passes(gpg):
    encrypted = gpg(
        "--armor", "--encrypt", "--recipient", "alice@example.org", data=os.urandom(300_000)
    )
    check_armored_message(encrypted.decode(), allow_headers=False)


# -- never anything but NotEncrypted -------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_packet_check_only_ever_refuses(data):
    with contextlib.suppress(NotEncrypted):
        check_packets(data)


@given(
    st.lists(st.sampled_from([PKESK3, SKESK4, SEIPD1, SEIPD2, LITERAL, b"\xff", b"\xc0"]))
    .map(b"".join)
    .flatmap(lambda s: st.tuples(st.just(s), st.integers(0, len(s))))
)
def test_packet_check_of_spliced_and_cut_streams_only_ever_refuses(case):
    stream, cut = case
    with contextlib.suppress(NotEncrypted):
        check_packets(stream[:cut])


@given(st.text(alphabet=st.sampled_from("ABab+/=09\n\r -:" + "PGPMESSAGEBEGINEND"), max_size=400))
def test_armor_check_only_ever_refuses(text):
    for candidate in (text, BEGIN + "\n" + text + "\n" + END):
        with contextlib.suppress(NotEncrypted):
            check_armored_message(candidate, allow_headers=True)
