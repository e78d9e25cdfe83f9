"""DKIM on a whole relay: incoming mail on port 25 needs a valid signature of its From: domain.

The keys of the other relays live in a real DNS server on loopback (Debian's dnsmasq, see
tests/dnsserver.py) that the relay asks (``dkim_dns_resolver``). The relay is started from the
``relay/`` rendering for example.org, where DKIM is on by default.
"""

from __future__ import annotations

import imaplib
import secrets
import shutil
import smtplib
import ssl
import tempfile
from pathlib import Path

import pytest
from dnsserver import DnsServer
from helpers_env import require_binary
from mails import Gpg, encrypted, plain
from relays import start_relay, stop_relay, wait_for

from filtermail.dkim import Signer, generate_key

TLS = ssl._create_unverified_context()  # the relay's self-signed certificate


@pytest.fixture(scope="module")
def world():
    """dnsmasq with the key of other.example, and a relay that asks it."""
    tmp = Path(tempfile.mkdtemp(prefix="chatmail-dkim-"))
    key = tmp / "other.private"
    record = generate_key(key, "sel", "other.example")
    strings = record.split('"')[1::2]
    dns = DnsServer(require_binary("dnsmasq"), tmp / "dnsmasq.log")
    dns.start(txt={"sel._domainkey.other.example": strings})
    host, port = dns.address
    relay = start_relay(f"dkim_dns_resolver = {host}:{port}\ndkim_dns_timeout = 2\n")
    gpg = Gpg()
    yield relay, dns, Signer("other.example", "sel", key), gpg, strings
    gpg.close()
    stop_relay(relay)
    dns.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def new_account(relay) -> str:
    addr = f"{secrets.token_hex(5)[:9]}@example.org"
    with imaplib.IMAP4_SSL("127.0.0.1", relay.ports.imaps, ssl_context=TLS) as imap:
        imap.login(addr, "password-" + secrets.token_hex(8))
    return addr


def relay_in(relay, sender: str, rcpt: str, data: bytes) -> dict:
    with smtplib.SMTP("127.0.0.1", relay.ports.smtp) as smtp:
        smtp.starttls(context=TLS)
        return smtp.sendmail(sender, [rcpt], data)


def refusal(relay, sender: str, rcpt: str, data: bytes) -> tuple[int, bytes]:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        relay_in(relay, sender, rcpt, data)
    return refused.value.smtp_code, refused.value.smtp_error


def test_signed_encrypted_mail_from_another_relay_is_delivered(world):
    relay, _dns, signer, gpg, _ = world
    bob = new_account(relay)
    data = encrypted("carol@other.example", [bob], gpg.encrypt(b"hello"), received="")
    assert relay_in(relay, "carol@other.example", bob, signer.sign(data) + data) == {}
    maildir = relay.cfg.mailboxes_dir / bob / "new"
    wait_for(lambda: list(maildir.iterdir()) if maildir.exists() else None, 10, "delivery")


def test_unsigned_mail_is_refused(world):
    relay, _dns, _signer, gpg, _ = world
    bob = new_account(relay)
    data = encrypted("carol@other.example", [bob], gpg.encrypt(b"hello"), received="")
    code, text = refusal(relay, "carol@other.example", bob, data)
    assert code == 550 and text.startswith(b"5.7.1") and b"DKIM" in text


def test_forged_mail_is_refused(world):
    relay, _dns, signer, gpg, _ = world
    bob = new_account(relay)
    # signed by other.example, but From: claims another domain
    forged = encrypted("mallory@example.net", [bob], gpg.encrypt(b"hi"), received="")
    code, text = refusal(relay, "mallory@example.net", bob, signer.sign(forged) + forged)
    assert code == 550 and b"5.7.1" in text
    # signed, then changed on the way
    data = encrypted("carol@other.example", [bob], gpg.encrypt(b"hi"), received="")
    tampered = signer.sign(data) + data.replace(b"Version: 1", b"Version: 1 ")
    code, text = refusal(relay, "carol@other.example", bob, tampered)
    assert code == 550 and b"does not verify" in text


def test_plaintext_is_refused_before_any_dkim_check(world):
    relay, _dns, signer, _gpg, _ = world
    bob = new_account(relay)
    data = plain("carol@other.example", [bob], "hello")
    code, _ = refusal(relay, "carol@other.example", bob, signer.sign(data) + data)
    assert code == 523


def test_a_failing_dns_lookup_defers_with_4xx(world):
    relay, dns, signer, gpg, strings = world
    bob = new_account(relay)
    data = encrypted("carol@other.example", [bob], gpg.encrypt(b"hello"), received="")
    signed = signer.sign(data) + data
    dns.stop()  # the resolver is gone: lookups time out
    try:
        code, text = refusal(relay, "carol@other.example", bob, signed)
    finally:
        dns.start(txt={"sel._domainkey.other.example": strings})
    assert 400 <= code < 500 and b"4.7.5" in text
    assert relay_in(relay, "carol@other.example", bob, signed) == {}
