"""filtermail.dkim without DNS: keys come from a dict, so every rule is pinned without sockets.

Keys are made by generate_key (Debian's openssl). tests/component/test_dkim_dns.py runs the same
verifier against a real DNS server (dnsmasq).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import subprocess

import dkim
import pytest
from dkimmail import DOMAIN, KEY_NAME, SELECTOR, chat_message, make_key, sized_message
from hypothesis import given
from hypothesis import strategies as st

from filtermail import dkimcheck
from filtermail.dkim import Key, Signer, SigningError, Verdict, Verifier, a_labels, public_txt

NOT_VERIFIED = Verdict(False, 550, f"5.7.1 DKIM signature of {DOMAIN} does not verify")
UNSIGNED = Verdict(False, 550, "5.7.1 No DKIM signature")


@pytest.fixture(scope="module")
def signer(key):
    return Signer(DOMAIN, SELECTOR, key.path)


@pytest.fixture(scope="module")
def check(key):
    """check(message, from_domain, records) -> Verdict, with ``records`` instead of DNS;
    ``check.asked`` lists the key names the last call looked up."""
    asked: list[str] = []

    def run(message: bytes, from_domain: str = DOMAIN, records=None) -> Verdict:
        records = {KEY_NAME: key.value} if records is None else records
        asked.clear()

        async def lookup(name: str) -> bytes | Key:
            asked.append(name)
            return records.get(name, Key.MISSING)

        return asyncio.run(Verifier(None, 1.0, lookup=lookup).verify(message, from_domain))

    run.asked = asked
    return run


def test_signed_chat_message_verifies(signer, check):
    message = chat_message()
    assert check(signer.sign(message) + message) == Verdict(
        True, 250, f"2.7.0 DKIM signature of {DOMAIN} verified"
    )
    assert check.asked == [KEY_NAME]


def test_signature_is_relaxed_rsa_sha256_and_oversigns_from(signer):
    field = signer.sign(chat_message())
    assert field.startswith(b"DKIM-Signature: ") and field.endswith(b"\r\n")
    tags = dkim.util.parse_tag_value(field.split(b":", 1)[1])
    assert (tags[b"a"], tags[b"c"], tags[b"d"], tags[b"s"]) == (
        b"rsa-sha256",
        b"relaxed/relaxed",
        DOMAIN.encode(),
        SELECTOR.encode(),
    )
    signed = re.sub(rb"\s+", b"", tags[b"h"]).split(b":")
    assert signed.count(b"from") == 2
    for name in (b"to", b"subject", b"date", b"message-id", b"chat-version", b"autocrypt"):
        assert name in signed
    assert b"content-type" in signed and b"mime-version" in signed
    assert b"l" not in tags


def test_dkimpy_alone_verifies_our_signatures(signer, key):
    """Interoperability: dkimpy's own verify, with its own canonicalization, agrees."""
    message = chat_message(b"some  text\t with   runs  \r\nof white space   \r\n\r\n\r\n")
    signed = signer.sign(message) + message
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: key.value)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_lf_and_crlf_messages_sign_and_verify_either_way(signer, check, line_end):
    message = chat_message().replace(b"\r\n", line_end)
    signed = signer.sign(message) + message
    assert check(signed).ok
    assert check(signed.replace(b"\r\n", b"\n")).ok
    assert check(signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")).ok


def test_changed_body_does_not_verify(signer, check):
    message = chat_message()
    signed = signer.sign(message) + message
    assert check(signed.replace(b"wV4DAAAA", b"wV4DAAAB")) == NOT_VERIFIED


def test_relaxed_white_space_change_still_verifies(signer, check):
    message = chat_message()
    signed = signer.sign(message) + message
    assert check(signed.replace(b"Subject: [...]", b"Subject:   [...]  ")).ok
    assert check(signed.replace(b"Version: 1\r\n", b"Version:  1 \r\n")).ok


@pytest.mark.parametrize(
    "old, new",
    [
        (b"Subject: [...]", b"Subject: [..]"),
        (b"To: <bob@example.net>", b"To: <eve@example.net>"),
        (b"Chat-Version: 1.0", b"Chat-Version: 1.1"),
        (b"keydata=xjMEZQ", b"keydata=xjMEZR"),
        (b"boundary=", b"boundary=x"),
    ],
)
def test_changed_signed_header_does_not_verify(signer, check, old, new):
    message = chat_message()
    signed = signer.sign(message) + message
    assert old in signed
    assert check(signed.replace(old, new)) == NOT_VERIFIED


def test_added_from_does_not_verify(signer, check):
    message = chat_message()
    field = signer.sign(message)
    for forged in (
        field + b"From: <mallory@example.org>\r\n" + message,
        field + message.replace(b"To:", b"From: <mallory@example.org>\r\nTo:"),
    ):
        assert check(forged) == NOT_VERIFIED


def test_added_unsigned_trace_field_still_verifies(signer, check):
    message = chat_message()
    signed = b"Received: from a.example.org by b.example.net\r\n" + signer.sign(message) + message
    assert check(signed).ok


def test_from_domain_other_than_d_is_refused(signer, check):
    message = chat_message()
    signed = signer.sign(message) + message
    assert check(signed, "example.net") == Verdict(
        False, 550, "5.7.1 No DKIM signature of example.net"
    )
    assert check(signed, "sub.example.org").reason == "5.7.1 No DKIM signature of sub.example.org"
    assert check.asked == []


def test_d_matches_the_from_domain_case_insensitively(signer, check, key):
    message = chat_message()
    signed = signer.sign(message) + message
    assert check(signed, "EXAMPLE.Org").ok
    field = dkim.DKIM(message).sign(SELECTOR.encode(), b"Example.ORG", key.path.read_bytes())
    assert b"d=Example.ORG;" in field
    assert check(field + message, DOMAIN).ok


def test_unsigned_message_is_refused(check):
    assert check(chat_message()) == UNSIGNED
    assert check(b"") == UNSIGNED
    assert check(b"\r\n\r\nbody only\r\n") == UNSIGNED


def test_wrong_key_does_not_verify(signer, check, other_key):
    message = chat_message()
    assert check(signer.sign(message) + message, records={KEY_NAME: other_key.value}) == (
        NOT_VERIFIED
    )


@pytest.mark.parametrize(
    "record",
    [b"", b"v=DKIM1; k=rsa; p=", b"v=DKIM1; k=rsa; p=AAAA", b"v=spf1 -all", b"\xff\x00;;=="],
)
def test_unusable_key_record_does_not_verify(signer, check, record):
    message = chat_message()
    assert check(signer.sign(message) + message, records={KEY_NAME: record}) == NOT_VERIFIED


def test_missing_key_is_refused(signer, check):
    message = chat_message()
    assert check(signer.sign(message) + message, records={}) == Verdict(
        False, 550, f"5.7.1 No DKIM key for {KEY_NAME}"
    )


def test_failed_lookup_is_deferred(signer, check):
    message = chat_message()
    verdict = check(signer.sign(message) + message, records={KEY_NAME: Key.FAILED})
    assert verdict == Verdict(False, 451, "4.7.5 DKIM key lookup failed, try again later")


def test_one_valid_signature_among_bad_ones_passes(signer, check, key, other_key):
    message = chat_message()
    other = Signer(DOMAIN, "other", other_key.path).sign(message)
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=x; h=from; bh=AAAA; b=AAAA\r\n"
    signed = broken + other + signer.sign(message) + message
    records = {KEY_NAME: key.value, f"other._domainkey.{DOMAIN}": key.value}  # other: wrong
    assert check(signed, records=records).ok


def test_lookup_failure_outranks_bad_signatures_and_missing_keys(signer, check, other_key):
    message = chat_message()
    signed = (
        Signer(DOMAIN, "a", other_key.path).sign(message)
        + Signer(DOMAIN, "b", other_key.path).sign(message)
        + signer.sign(message)
        + message
    )
    records = {f"b._domainkey.{DOMAIN}": Key.FAILED, KEY_NAME: other_key.value}
    assert check(signed, records=records).code == 451
    records = {f"b._domainkey.{DOMAIN}": Key.MISSING, KEY_NAME: Key.FAILED}
    assert check(signed, records=records).code == 451
    assert check(signed, records={KEY_NAME: other_key.value}) == NOT_VERIFIED


def test_at_most_five_signatures_are_tried(signer, check, key, other_key):
    message = chat_message()
    wrong = b"".join(Signer(DOMAIN, f"s{i}", other_key.path).sign(message) for i in range(5))
    records = {f"s{i}._domainkey.{DOMAIN}": key.value for i in range(5)}  # not other_key's
    assert check(wrong + signer.sign(message) + message, records=records) == NOT_VERIFIED
    assert sorted(check.asked) == sorted(records)


def test_rsa_sha1_is_refused(key, check):
    # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid
    message = chat_message()
    field = dkim.DKIM(message).sign(
        SELECTOR.encode(), DOMAIN.encode(), key.path.read_bytes(), signature_algorithm=b"rsa-sha1"
    )
    assert check(field + message) == NOT_VERIFIED


def test_body_length_tag_is_refused(key, check):
    # RFC 6376 §8.2: with l= anyone may append to the body
    message = chat_message()
    field = dkim.DKIM(message).sign(
        SELECTOR.encode(), DOMAIN.encode(), key.path.read_bytes(), length=True
    )
    assert dkim.verify(field + message, dnsfunc=lambda name, timeout=5: key.value)
    assert check(field + message) == NOT_VERIFIED


def test_simple_body_canonicalization_verifies(key, check):
    message = chat_message()
    field = dkim.DKIM(message).sign(
        SELECTOR.encode(),
        DOMAIN.encode(),
        key.path.read_bytes(),
        canonicalize=(b"relaxed", b"simple"),
    )
    assert check(field + message).ok
    assert check(field + message.replace(b"Version: 1", b"Version:  1")) == NOT_VERIFIED


GOOD_TAGS = b"v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=sel; h=from; bh=AAAA; b=AAAA"


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b";;;",
        b"garbage",
        b"v=1; d=example.org",  # tags missing
        b"d=example.org; d=example.org",  # a duplicate tag
        GOOD_TAGS.replace(b"v=1", b"v=2"),
        GOOD_TAGS.replace(b"rsa-sha256", b"ed448-shake"),
        GOOD_TAGS.replace(b"s=sel", b"s="),
        GOOD_TAGS.replace(b"s=sel", b"s=a b"),
        GOOD_TAGS.replace(b"s=sel", b"s=../../etc"),
        GOOD_TAGS.replace(b"s=sel", b"s=" + b"a" * 300),
        GOOD_TAGS.replace(b"s=sel", b"s=\xff\xfe"),
        GOOD_TAGS.replace(b"h=from", b"h=to"),
        GOOD_TAGS.replace(b"h=from", b"h=" + b":".join([b"x"] * 200) + b":from"),
        GOOD_TAGS.replace(b"b=AAAA", b"b=!!!!"),
        GOOD_TAGS.replace(b"b=AAAA", b"b="),
        GOOD_TAGS.replace(b"bh=AAAA", b"bh=A"),
        GOOD_TAGS.replace(b"c=relaxed/relaxed", b"c=bogus"),
        GOOD_TAGS.replace(b"c=relaxed/relaxed", b"c=relaxed/relaxed/relaxed"),
        GOOD_TAGS + b"; l=1",
        GOOD_TAGS + b"; l=" + b"9" * 80,
        GOOD_TAGS + b"; i=@elsewhere.net",
        GOOD_TAGS + b"; t=99999999999",
        GOOD_TAGS + b"; x=1",
        GOOD_TAGS + b"; q=http",
        GOOD_TAGS.replace(b"b=AAAA", b"b=AAAA" + b" " * 1000 + b"AAAA"),
        GOOD_TAGS.replace(b"b=AAAA", b"b=" + b"A" * 20000),
        GOOD_TAGS.replace(b"h=from", b"h=from" + b"\r\n " * 100),
    ],
)
def test_malformed_signature_is_refused(check, value):
    verdict = check(b"DKIM-Signature: " + value + b"\r\n" + chat_message())
    assert verdict.code == 550
    assert verdict.reason in (NOT_VERIFIED.reason, "5.7.1 No DKIM signature of example.org")


@pytest.mark.parametrize(
    "message, reason",
    [
        (b" continued first\r\nFrom: a@example.org\r\n\r\n", "Malformed message header"),
        (b"From: a@example.org\r\nno colon here\r\n\r\n", "Malformed message header"),
        (b"X: " + b"y" * 300_000 + b"\r\n\r\n", "Message header too large to check DKIM"),
        (b"X: y\r\n" * 1001 + b"\r\n", "Message header has too many lines to check DKIM"),
        (
            b"X: y\r\n" + b" z\r\n" * 2000 + b"\r\n",
            "Message header has too many lines to check DKIM",
        ),
    ],
)
def test_unparseable_header_is_refused(check, signer, message, reason):
    assert check(message) == Verdict(False, 550, f"5.7.1 {reason}")
    with pytest.raises(SigningError, match=reason):
        signer.sign(message)


def test_long_white_space_runs_are_linear(signer, check):
    """dkimpy alone takes time quadratic in a run of spaces; 2 MB of them would take hours."""
    message = chat_message(b"x" + b" " * 2_000_000 + b"y\r\n" + b"\t \t" * 300_000 + b"\r\n")
    signed = signer.sign(message) + message
    assert check(signed).ok
    assert check(signed.replace(b"y\r\n", b"z\r\n")) == NOT_VERIFIED


def test_large_message_verifies_off_the_event_loop(signer, check):
    message = sized_message(1 << 20)
    signed = signer.sign(message) + message
    assert len(signed) > 1 << 20
    assert check(signed).ok
    assert check(signed[:-100] + b"x" * 100) == NOT_VERIFIED


def test_reply_text_is_one_safe_line(signer, check):
    message = chat_message()
    signed = signer.sign(message) + message
    for domain in ("evil.org\r\n250 OK", "\x00\xff", "b\u00fccher.example", "x" * 1000):
        reason = check(signed, domain).reason
        assert reason.startswith("5.7.1 No DKIM signature of ")
        assert reason.isprintable() and len(reason) < 200


def test_a_labels():
    assert a_labels("B\u00fccher.Example.") == "xn--bcher-kva.example"
    assert a_labels("example.org") == "example.org"
    for bad in ("", ".", "a..b", "[192.0.2.1]", "x" * 64 + ".org", "a b.org", "-a.org"):
        assert a_labels(bad) == ""


def test_signer_needs_exactly_one_from(signer):
    message = chat_message()
    with pytest.raises(SigningError, match="not 0"):
        signer.sign(message.replace(b"From: <alice@example.org>\r\n", b""))
    with pytest.raises(SigningError, match="not 2"):
        signer.sign(b"From: <a@example.org>\r\n" + message)


def test_signer_reports_an_unusable_key_with_its_path(tmp_path, key):
    missing = tmp_path / "missing.private"
    with pytest.raises(OSError, match=r"missing\.private"):
        Signer(DOMAIN, SELECTOR, missing)
    garbage = tmp_path / "garbage.private"
    for data in (b"", b"garbage", b"-----BEGIN X-----\nAAAA\n-----END X-----\n", os.urandom(300)):
        garbage.write_bytes(data)
        with pytest.raises(ValueError, match=r"garbage\.private"):
            Signer(DOMAIN, SELECTOR, garbage)
    pem = key.path.read_bytes()
    garbage.write_bytes(pem[: len(pem) // 2] + pem[-30:])  # truncated inside
    with pytest.raises(ValueError, match=r"garbage\.private"):
        Signer(DOMAIN, SELECTOR, garbage)
    with pytest.raises(ValueError, match="not a DNS name"):
        Signer("example..org", SELECTOR, key.path)
    with pytest.raises(ValueError, match="not a DNS name"):
        Signer(DOMAIN, "a b", key.path)


def test_signer_refuses_a_short_key(tmp_path):
    short = tmp_path / "short.private"
    short.write_bytes(openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:768"))
    with pytest.raises(ValueError, match="768 bits"):
        Signer(DOMAIN, SELECTOR, short)


def openssl(*args: str, stdin: bytes = b"") -> bytes:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True)
    return done.stdout


def test_opendkim_style_pkcs1_key_signs(tmp_path, key, check):
    pkcs1 = tmp_path / "pkcs1.private"
    pkcs1.write_bytes(openssl("pkey", "-traditional", stdin=key.path.read_bytes()))
    assert pkcs1.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    message = chat_message()
    assert check(Signer(DOMAIN, SELECTOR, pkcs1).sign(message) + message).ok


# -- keys -----------------------------------------------------------------------------------------


def test_generate_key_writes_a_0640_pem_key(key):
    st_key = key.path.stat()
    assert stat.S_IMODE(st_key.st_mode) == 0o640
    assert key.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert not [p for p in key.path.parent.iterdir() if p.name.startswith(".tmp")]


def test_generate_key_ignores_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        made = make_key(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o640


def test_generate_key_refuses_to_overwrite(key):
    before = key.path.read_bytes()
    with pytest.raises(FileExistsError, match=str(key.path)):
        make_key(key.path.parent)
    assert key.path.read_bytes() == before


def test_generate_key_checks_names_before_writing(tmp_path):
    from filtermail.dkim import generate_key

    for selector, domain in (("", DOMAIN), (SELECTOR, ""), ("a b", DOMAIN), (SELECTOR, 'x" y')):
        with pytest.raises(ValueError):
            generate_key(tmp_path / "k", selector, domain)
    assert not (tmp_path / "k").exists()


def test_generate_key_makes_the_key_directory_0755(tmp_path):
    old = os.umask(0o077)
    try:
        made = make_key(tmp_path / "etc" / "dkimkeys")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.path.parent.stat().st_mode) == 0o755


def test_record_is_a_zone_file_line_of_short_strings(key):
    name, rrtype, data = key.record.split(" ", 2)
    assert (name, rrtype) == (f"{KEY_NAME}.", "TXT")
    assert data.startswith('"v=DKIM1; k=rsa; p=MIIB')
    assert all(len(s) <= 255 for s in key.strings) and len(key.strings) == 2
    assert public_txt(key.path, SELECTOR, DOMAIN) == key.record
    assert public_txt(key.path) == key.record.split(" TXT ", 1)[1]


def test_printed_record_verifies_a_signature(key, signer, check):
    message = chat_message()
    assert check(signer.sign(message) + message, records={KEY_NAME: key.value}).ok


# -- hostile input --------------------------------------------------------------------------------

header_names = st.sampled_from(
    [b"From", b"To", b"DKIM-Signature", b"dkim-signature", b"Subject", b"X-\xff", b" ", b""]
)
tag_values = st.lists(
    st.sampled_from(
        [
            b"v=1",
            b"a=rsa-sha256",
            b"a=rsa-sha1",
            b"d=example.org",
            b"d=EXAMPLE.org",
            b"s=sel",
            b"s=",
            b"h=from:to",
            b"h=",
            b"bh=AAAA",
            b"b=AAAA",
            b"c=relaxed/simple",
            b"c=/",
            b"l=0",
            b"t=1",
            b"x=",
            b"i=@example.org",
            b"q=dns/txt",
            b"=",
            b";",
            b"\r\n ",
            b"\xff",
        ]
    )
    | st.binary(max_size=20),
    max_size=12,
)


@st.composite
def hostile_messages(draw):
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(header_names)
        value = (
            b"; ".join(draw(tag_values)) if b"kim" in name.lower() else draw(st.binary(max_size=40))
        )
        lines.append(name + b":" + value)
    sep = draw(st.sampled_from([b"\r\n", b"\n"]))
    return sep.join(lines) + sep + draw(st.sampled_from([b"", sep])) + draw(st.binary(max_size=200))


@given(message=hostile_messages() | st.binary(max_size=300))
def test_verify_never_raises(check, message):
    verdict = check(message)
    assert verdict.code == 550 and verdict.reason.startswith("5.7.1 ")


@given(data=st.data())
def test_verify_of_a_damaged_signed_message_never_raises(signer, check, data):
    message = chat_message()
    signed = bytearray(signer.sign(message) + message)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(signed) - 1))
        signed[at] = data.draw(st.integers(0, 255))
    verdict = check(bytes(signed))
    assert verdict.code in (250, 550)


@given(header=hostile_messages(), body=st.binary(max_size=300))
def test_sign_raises_only_signing_error(signer, header, body):
    with contextlib.suppress(SigningError):
        signer.sign(header + b"\r\n" + body)


def test_signature_selection_is_bounded(signer):
    message = chat_message()
    many = b"".join(signer.sign(message) for _ in range(20)) + message
    total, sigs = dkimcheck.signatures(dkimcheck.parse(many), DOMAIN)
    assert (total, len(sigs)) == (20, dkimcheck.MAX_SIGNATURES)
