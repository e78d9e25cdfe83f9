"""filtermail.mime: the RFC 3156 shape of an encrypted message, Secure-Join requests, addresses."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_openpgp import PKESK3, SEIPD1, armor

from filtermail.mime import addresses, check_encrypted, is_secure_join_request, parse
from filtermail.openpgp import NotEncrypted

ARMORED = armor(PKESK3 + SEIPD1)


def encrypted_mail(
    armored: str = ARMORED,
    *,
    content_type: str = 'multipart/encrypted; protocol="application/pgp-encrypted"',
    control: str = "Version: 1",
    control_type: str = "application/pgp-encrypted",
    data_type: str = "application/octet-stream",
    extra_part: str = "",
) -> bytes:
    """An encrypted message as Delta Chat sends one (boundary and headers alike)."""
    text = (
        "From: alice@example.org\r\nTo: bob@[192.0.2.1]\r\nSubject: [...]\r\n"
        f'Content-Type: {content_type}; boundary="b1"\r\nMIME-Version: 1.0\r\n\r\n'
        "--b1\r\n"
        f"Content-Type: {control_type}\r\nContent-Description: PGP/MIME version\r\n\r\n"
        f"{control}\r\n"
        "--b1\r\n"
        f'Content-Type: {data_type}; name="encrypted.asc"\r\n'
        'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        f"{armored.replace(chr(10), chr(13) + chr(10))}\r\n"
        f"{extra_part}"
        "--b1--\r\n"
    )
    return text.encode()


@pytest.mark.parametrize("outgoing", [True, False])
def test_encrypted_message_passes(outgoing):
    check_encrypted(parse(encrypted_mail()), outgoing=outgoing)


def test_armor_headers_pass_incoming_only():
    mail = encrypted_mail(armor(PKESK3 + SEIPD1, headers="Version: Other Client 1.0"))
    check_encrypted(parse(mail), outgoing=False)
    with pytest.raises(NotEncrypted, match="reveal the client"):
        check_encrypted(parse(mail), outgoing=True)


PLAIN = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.mark.parametrize(
    ("mail", "why"),
    [
        (PLAIN, "text/plain is not multipart/encrypted"),
        (encrypted_mail(content_type="multipart/encrypted"), "protocol"),
        (encrypted_mail(content_type="multipart/mixed"), "not multipart/encrypted"),
        (encrypted_mail(control="Version: 2"), "Version: 1"),
        (encrypted_mail(control_type="text/plain"), "first part"),
        (encrypted_mail(data_type="text/plain"), "second part"),
        (
            encrypted_mail(extra_part="--b1\r\nContent-Type: text/plain\r\n\r\nleak\r\n"),
            "exactly two parts",
        ),
        (encrypted_mail(armor(PKESK3)), "no encrypted data packet"),
        (encrypted_mail("-----BEGIN PGP MESSAGE-----\nplain words\n"), "does not end"),
        (encrypted_mail(ARMORED.replace("=", "é", 1)), "not ASCII|base64"),
    ],
)
def test_anything_else_is_not_encrypted(mail, why):
    with pytest.raises(NotEncrypted, match=why):
        check_encrypted(parse(mail), outgoing=True)


def test_parts_in_the_wrong_order_are_refused():
    mail = encrypted_mail(control_type="application/octet-stream", control=ARMORED)
    mail = mail.replace(b'Content-Type: application/octet-stream; name="encrypted.asc"', b"X: y")
    with pytest.raises(NotEncrypted):
        check_encrypted(parse(mail), outgoing=True)


def test_nested_multipart_is_refused():
    inner = encrypted_mail().split(b"\r\n\r\n", 1)[1]
    outer = (
        b'From: a@example.org\r\nContent-Type: multipart/encrypted; protocol="application/'
        b'pgp-encrypted"; boundary="o"\r\n\r\n--o\r\nContent-Type: application/pgp-encrypted\r\n'
        b'\r\nVersion: 1\r\n--o\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        + inner
        + b"\r\n--o--\r\n"
    )
    with pytest.raises(NotEncrypted, match="second part"):
        check_encrypted(parse(outer), outgoing=True)


def secure_join(
    value: str = "vc-request", body: str | None = None, multipart: bool = True
) -> bytes:
    body = f"Secure-Join: {value}" if body is None else body
    head = f"From: alice@example.org\r\nTo: bob@example.org\r\nSecure-Join: {value}\r\n"
    if not multipart:
        return f"{head}Content-Type: text/plain\r\n\r\n{body}\r\n".encode()
    return (
        f'{head}Content-Type: multipart/mixed; boundary="s"\r\n\r\n'
        f"--s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n--s--\r\n"
    ).encode()


@pytest.mark.parametrize("value", ["vc-request", "vg-request"])
@pytest.mark.parametrize("multipart", [True, False])
def test_secure_join_requests_are_recognised(value, multipart):
    assert is_secure_join_request(parse(secure_join(value, multipart=multipart)))


@pytest.mark.parametrize(
    "mail",
    [
        secure_join("vc-auth-required"),  # later handshake steps are encrypted
        secure_join(body="Secure-Join: vc-request\r\nand a secret"),
        secure_join(body="hello"),
        secure_join().replace(b"--s--", b"--s\r\nContent-Type: text/plain\r\n\r\nmore\r\n--s--"),
        secure_join().replace(b"text/plain; charset=utf-8", b"text/html"),
        secure_join().replace(b"Secure-Join: vc-request\r\n", b"", 1),  # no header
        secure_join().replace(b"To:", b"Secure-Join: vg-request\r\nTo:"),  # two headers
        PLAIN,
    ],
)
def test_anything_else_is_no_secure_join_request(mail):
    assert not is_secure_join_request(parse(mail))


def test_addresses_include_ip_literals_and_are_lowercase():
    msg = parse(b"From: Alice <Alice@[192.0.2.1]>\r\nTo: b@[1.2.3.4], C@Example.org\r\n\r\n")
    assert addresses(msg, "From") == ["alice@[192.0.2.1]"]
    assert addresses(msg, "To") == ["b@[1.2.3.4]", "c@example.org"]
    assert addresses(msg, "Cc") == []
    assert addresses(parse(b"From: garbage <<<\r\n\r\n"), "From") == []


@given(st.binary(max_size=3000))
def test_checks_of_any_bytes_only_ever_refuse(data):
    msg = parse(data)
    with contextlib.suppress(NotEncrypted):
        check_encrypted(msg, outgoing=True)
    assert is_secure_join_request(msg) in (True, False)
    assert isinstance(addresses(msg, "From"), list)


@given(st.integers(0, len(encrypted_mail())), st.binary(max_size=50))
def test_cut_or_spliced_encrypted_mail_only_ever_refuses(cut, junk):
    mail = encrypted_mail()
    with contextlib.suppress(NotEncrypted):
        check_encrypted(parse(mail[:cut] + junk + mail[cut:]), outgoing=True)
