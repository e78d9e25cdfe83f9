"""filtermail.mime: the RFC 3156 shape of an encrypted message, Secure-Join requests, addresses."""

from __future__ import annotations

import contextlib
from email import policy
from email.parser import BytesHeaderParser

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_openpgp import PKESK3, SEIPD1, armor

from filtermail.mime import (
    _content_fields,
    addresses,
    check_encrypted,
    check_encrypted_bytes,
    head,
    is_autocrypt_setup_message,
    is_bounce,
    is_secure_join_request,
    parse,
    simple_mailbox,
    split_head,
)
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


def check_parsed(data: bytes, *, outgoing: bool) -> None:
    check_encrypted(parse(data), outgoing=outgoing)


# the email package's verdict, and the same without building the message
CHECKS = pytest.mark.parametrize("check", [check_parsed, check_encrypted_bytes])


@CHECKS
@pytest.mark.parametrize("outgoing", [True, False])
def test_encrypted_message_passes(check, outgoing):
    check(encrypted_mail(), outgoing=outgoing)


@CHECKS
def test_armor_headers_pass_incoming_only(check):
    mail = encrypted_mail(armor(PKESK3 + SEIPD1, headers="Version: Other Client 1.0"))
    check(mail, outgoing=False)
    with pytest.raises(NotEncrypted, match="reveal the client"):
        check(mail, outgoing=True)


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
@CHECKS
def test_anything_else_is_not_encrypted(check, mail, why):
    with pytest.raises(NotEncrypted, match=why):
        check(mail, outgoing=True)


@CHECKS
def test_parts_in_the_wrong_order_are_refused(check):
    mail = encrypted_mail(control_type="application/octet-stream", control=ARMORED)
    mail = mail.replace(b'Content-Type: application/octet-stream; name="encrypted.asc"', b"X: y")
    with pytest.raises(NotEncrypted):
        check(mail, outgoing=True)


@CHECKS
@pytest.mark.parametrize(
    "mail",
    [
        encrypted_mail().replace(b"\r\n", b"\n"),  # LF line ends
        encrypted_mail().replace(b"\r\n\r\n--b1\r\n", b"\r\n\r\npreamble\r\n--b1\r\n", 1),
        encrypted_mail() + b"epilogue\r\n--b1\r\nContent-Type: text/plain\r\n\r\nafter\r\n",
        encrypted_mail().replace(b"--b1\r\n", b"--b1 \t\r\n--b1\r\n", 1),  # blanks, a repeat
        encrypted_mail().replace(b"--b1--\r\n", b"--b1--"),  # no line break at the end
        encrypted_mail().replace(b'boundary="b1"', b"boundary=b1"),
        encrypted_mail()
        .replace(  # base64: left to the email package
            b"Content-Type: application/pgp-encrypted\r\n",
            b"Content-Type: application/pgp-encrypted\r\nContent-Transfer-Encoding: base64\r\n",
        )
        .replace(b"Version: 1", b"VmVyc2lvbjogMQ=="),
        encrypted_mail().replace(b"--b1--\r\n", b""),  # no close delimiter: the email package
        b"From a@b Mon Jan  1 00:00:00 2024\r\n" + encrypted_mail(),  # an mbox line: likewise
        encrypted_mail().replace(b"MIME-Version", b"no field\r\nMIME-Version"),  # the preamble
    ],
)
def test_shapes_the_feed_parser_accepts_pass_both_ways(check, mail):
    check(mail, outgoing=True)


@CHECKS
@pytest.mark.parametrize(
    ("mail", "why"),
    [
        (encrypted_mail().replace(b'; boundary="b1"', b""), "exactly two parts"),
        (encrypted_mail().replace(b"\r\n--b1\r\n", b"\r\n--b1--\r\n", 1), "exactly two parts"),
        (encrypted_mail().replace(b"Version: 1\r\n", b"Version: 1\rsecret\r\n"), "Version"),
        (
            encrypted_mail().replace(
                b"Content-Type: multipart", b"no field\r\nContent-Type: multipart"
            ),
            "text/plain is not",
        ),
    ],
)
def test_unusual_shapes_get_the_email_packages_verdict(check, mail, why):
    with pytest.raises(NotEncrypted, match=why):
        check(mail, outgoing=True)


def test_split_head_only_for_clean_header_blocks():
    assert split_head(b"A: 1\r\n folded\r\nB:2\r\n\r\nbody") == (
        b"A: 1\r\n folded\r\nB:2\r\n",
        b"body",
    )
    assert split_head(b"A: 1\n\nbody\n") == (b"A: 1\n", b"body\n")
    assert split_head(b"A: 1\r\n") == (b"A: 1\r\n", b"")
    assert split_head(b"\r\nbody") == (b"", b"body")
    for unusual in (b"A : 1\r\n\r\n", b" A: 1\r\n\r\n", b"A: 1\rB: 2\r\n\r\n", b"A: 1"):
        assert split_head(unusual) is None


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


@pytest.mark.parametrize("parser", [parse, head])
def test_addresses_include_ip_literals_and_are_lowercase(parser):
    msg = parser(b"From: Alice\r\n <Alice@[192.0.2.1]>\r\nTo: b@[1.2.3.4], C@Example.org\r\n\r\n")
    assert addresses(msg, "From") == ["alice@[192.0.2.1]"]
    assert addresses(msg, "To") == ["b@[1.2.3.4]", "c@example.org"]
    assert addresses(msg, "Cc") == []
    assert addresses(parser(b"From: garbage <<<\r\n\r\n"), "From") == []


@pytest.mark.parametrize(
    ("value", "addr"),
    [
        ("<alice@example.org>", "alice@example.org"),
        (" Alice.B@Example.org ", "Alice.B@Example.org"),
        ('Alice "the, first" Smith <a+b@c-d.org>', "a+b@c-d.org"),
        ("=?utf-8?q?Al=C3=ADce?= <a@b.org>", "a@b.org"),
        ("a@[192.0.2.1]", None),
        ("a@=?utf-8?q?b?=", None),
        ('"a b"@c.org', None),
        ("Dr. Who <a@b.org>", None),
        ("a@b.org (comment)", None),
        ("<a@b.org>, <c@d.org>", None),
        ("a" * 100_000, None),
    ],
)
def test_plain_mailboxes_skip_the_header_registry(value, addr):
    assert simple_mailbox(value) == addr


TOKENS = ["a", "Bc", ".", "@", "<", ">", " ", "\t", '"', ",", "(", ")", "[", "]", "\\", ":", ";"]


@given(st.lists(st.sampled_from([*TOKENS, "x.y", "=?utf-8?q?a?=", "\u00fc", "'"]), max_size=14))
def test_a_plain_mailbox_is_what_the_header_registry_reads(tokens):
    value = "".join(tokens)
    addr = simple_mailbox(value)
    if addr is not None:
        header = policy.default.header_factory("From", value)
        assert [a.addr_spec for a in header.addresses] == [addr]


FIELD_NAMES = ["Content-Type", "content-TYPE", "Content-Transfer-Encoding", "X-A", "Content-Typ"]
VALUE_TOKENS = ["application/octet-stream", "A/B", "/", " ", "\t", ";", "q=1", "7BIT", "\u00e9"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(FIELD_NAMES),
            st.lists(st.sampled_from([*VALUE_TOKENS, "\r\n ", "\n\t"]), max_size=6),
            st.sampled_from(["\r\n", "\n"]),
        ),
        max_size=4,
    )
)
def test_part_fields_are_read_as_the_header_parser_reads_them(fields):
    block = "".join(f"{name}:{''.join(value)}{end}" for name, value, end in fields).encode()
    if split_head(block + b"\r\nbody") != (block, b"body"):
        return  # not a clean block: the email package parses such a part
    got = _content_fields(block)
    if not block.isascii():
        assert got is None
        return
    headers = BytesHeaderParser(policy=policy.compat32).parsebytes(block)
    encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
    assert got == (headers.get_content_type(), encoding)


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


# -- Autocrypt Setup Message, bounces --------------------------------------------------------------


def setup_message(
    subject: str = "Autocrypt Setup Message", ctype: str = "multipart/mixed"
) -> bytes:
    return (
        f"From: a@x.org\r\nTo: a@x.org\r\nSubject: {subject}\r\nAutocrypt-Setup-Message: v1\r\n"
        f'Content-Type: {ctype}; boundary="s"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\n'
        "Type the setup code.\r\n--s\r\nContent-Type: application/autocrypt-setup\r\n\r\n"
        "-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----\r\n--s--\r\n"
    ).encode()


@pytest.mark.parametrize("parser", [parse, head])
def test_setup_message_to_oneself_is_recognised(parser):
    msg = parser(setup_message())
    assert is_autocrypt_setup_message(msg, "a@x.org", ["a@x.org"])
    assert is_autocrypt_setup_message(msg, "A@x.org", ["a@X.org", "a@x.org"])


@pytest.mark.parametrize(
    ("mail", "sender", "rcpts"),
    [
        (setup_message(), "a@x.org", ["b@x.org"]),
        (setup_message(), "a@x.org", ["a@x.org", "b@x.org"]),
        (setup_message(), "a@x.org", []),
        (setup_message(), "", [""]),
        (setup_message("Autocrypt Setup Message!"), "a@x.org", ["a@x.org"]),
        (setup_message("[...]"), "a@x.org", ["a@x.org"]),
        (setup_message(ctype="multipart/alternative"), "a@x.org", ["a@x.org"]),
        (setup_message().replace(b"To:", b"Subject: x\r\nTo:"), "a@x.org", ["a@x.org"]),
    ],
)
def test_anything_else_is_no_setup_message(mail, sender, rcpts):
    assert not is_autocrypt_setup_message(head(mail), sender, rcpts)


def bounce(
    sender: str = "MAILER-DAEMON@mx.example.org", auto: str | None = "auto-replied"
) -> bytes:
    auto_header = "" if auto is None else f"Auto-Submitted: {auto}\r\n"
    return (
        f"From: Mail Delivery System <{sender}>\r\nTo: a@[127.0.0.1]\r\n{auto_header}"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n--r--\r\n"
    ).encode()


@pytest.mark.parametrize("parser", [parse, head])
@pytest.mark.parametrize("auto", ["auto-replied", "auto-generated", "Auto-Generated; x=y"])
def test_bounces_from_mailer_daemons_are_recognised(parser, auto):
    assert is_bounce(parser(bounce(auto=auto)))
    assert is_bounce(parser(bounce("mailer-daemon@[192.0.2.1]", auto=auto)))


@pytest.mark.parametrize(
    "mail",
    [
        bounce(auto=None),
        bounce(auto="no"),
        bounce(auto="No "),
        bounce(auto=""),
        bounce("postmaster@mx.example.org"),
        bounce("mailer-daemon.fake@mx.example.org"),
        bounce().replace(b"multipart/report", b"multipart/mixed"),
        bounce().replace(b"From:", b"From: x@y.org\r\nFrom:"),
        bounce().replace(
            b"Auto-Submitted: auto-replied", b"Auto-Submitted: no\r\nAuto-Submitted: x"
        ),
        PLAIN,
    ],
)
def test_anything_else_is_no_bounce(mail):
    assert not is_bounce(head(mail))


# -- the fast path never passes what the email package refuses ----------------------------------


def verdict(check, data: bytes, outgoing: bool) -> str:
    try:
        check(data, outgoing=outgoing)
    except NotEncrypted:
        return "refused"
    return "passed"


@given(st.integers(0, len(encrypted_mail())), st.binary(max_size=30), st.booleans())
def test_fast_and_email_package_verdicts_agree_on_spliced_mail(cut, junk, outgoing):
    mail = encrypted_mail()
    mail = mail[:cut] + junk + mail[cut:]
    assert verdict(check_encrypted_bytes, mail, outgoing) == verdict(check_parsed, mail, outgoing)


FRAGMENTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"--b1",
    b"--b1--",
    b" ",
    b"\t",
    b":",
    b"Content-Type: ",
    b"X: y",
]


@given(
    st.lists(
        st.tuples(st.integers(0, len(encrypted_mail())), st.sampled_from(FRAGMENTS)), max_size=4
    )
)
def test_fast_and_email_package_verdicts_agree_on_mime_syntax(edits):
    mail = encrypted_mail()
    for at, fragment in edits:
        mail = mail[:at] + fragment + mail[at:]
    assert verdict(check_encrypted_bytes, mail, True) == verdict(check_parsed, mail, True)
