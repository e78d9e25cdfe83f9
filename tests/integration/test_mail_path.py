"""The mail path of a whole relay: Postfix, filtermail (both ways), Dovecot LMTP, over the wire.

The relay is started from the ``relay/`` rendering (tests/relays.py), for the domain
example.org with DKIM signing on. Clients connect from 127.0.0.2, a loopback address nothing
else uses, so "no client IP anywhere" can be checked in delivered mail and in every log.
"""

from __future__ import annotations

import imaplib
import os
import secrets
import signal
import smtplib
import ssl
import time
from pathlib import Path

import dkim
import pytest
from mails import Gpg, encrypted, plain
from relays import Relay, start_relay, stop_relay, wait_for

from relay import supervise

CLIENT_IP = "127.0.0.2"
TLS = ssl._create_unverified_context()  # the relay's self-signed certificate
PASSWORD_OF = {}  # addr -> password, to check no log holds one
PLAIN_MARKER = "plaintext-body-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def relay():
    relay = start_relay("dkim_verify = false\nmax_user_send_burst_size = 1000\n")
    yield relay
    stop_relay(relay)


@pytest.fixture(scope="module")
def gpg():
    gpg = Gpg()
    yield gpg
    gpg.close()


def new_account(relay: Relay) -> str:
    """An account, created by its first IMAP login (as a chat client does)."""
    addr = f"{secrets.token_hex(5)[:9]}@example.org"
    password = secrets.token_urlsafe(16)
    PASSWORD_OF[addr] = password
    with imaplib.IMAP4_SSL("127.0.0.1", relay.ports.imaps, ssl_context=TLS) as imap:
        imap.login(addr, password)
    return addr


def submit(relay: Relay, addr: str, rcpts: list[str], data: bytes, port: str = "submissions"):
    """Send as ``addr`` over SMTP AUTH on submissions (TLS) or submission (STARTTLS)."""
    if port == "submissions":
        smtp = smtplib.SMTP_SSL(
            "127.0.0.1", relay.ports.submissions, context=TLS, source_address=(CLIENT_IP, 0)
        )
    else:
        smtp = smtplib.SMTP("127.0.0.1", relay.ports.submission, source_address=(CLIENT_IP, 0))
        smtp.starttls(context=TLS)
    with smtp:
        smtp.login(addr, PASSWORD_OF[addr])
        return smtp.sendmail(addr, rcpts, data)


def relay_in(relay: Relay, sender: str, rcpts: list[str], data: bytes):
    """Send as another relay does: port 25, STARTTLS, no AUTH."""
    with smtplib.SMTP("127.0.0.1", relay.ports.smtp, source_address=(CLIENT_IP, 0)) as smtp:
        smtp.starttls(context=TLS)
        return smtp.sendmail(sender, rcpts, data)


def inbox(relay: Relay, addr: str, count: int = 1, timeout: float = 10) -> list[bytes]:
    """The messages in ``addr``'s INBOX, once there are ``count`` of them."""
    with imaplib.IMAP4_SSL("127.0.0.1", relay.ports.imaps, ssl_context=TLS) as imap:
        imap.login(addr, PASSWORD_OF[addr])

        def fetch():
            imap.select("INBOX")
            _, data = imap.search(None, "ALL")
            numbers = data[0].split()
            if len(numbers) < count:
                return None
            return [imap.fetch(n, "(BODY.PEEK[])")[1][0][1] for n in numbers]

        return wait_for(fetch, timeout, f"{count} message(s) for {addr}")


def split(message: bytes) -> tuple[bytes, bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    return head, body


def test_encrypted_mail_is_delivered_intact_apart_from_the_documented_changes(relay, gpg):
    alice, bob = new_account(relay), new_account(relay)
    sent = encrypted(alice, [bob], gpg.encrypt(b"hi bob"), subject="secret subject", received="")
    assert submit(relay, alice, [bob], sent) == {}
    (got,) = inbox(relay, bob)
    head, body = split(got)
    assert body == split(sent)[1]  # the encrypted body, byte for byte
    assert b"Subject: [...]\r\n" in head and b"secret subject" not in got
    for line in split(sent)[0].split(b"\r\n"):
        if not line.startswith(b"Subject:"):
            assert line in head.split(b"\r\n")
    assert CLIENT_IP.encode() not in got
    # outgoing mail of a domain relay is DKIM-signed, and the signature verifies
    assert b"DKIM-Signature:" in head and b"d=example.org" in head
    key = relay.cfg.dkim_key_path.read_bytes()
    assert key
    from filtermail.dkim import public_txt

    txt = "".join(public_txt(relay.cfg.dkim_key_path).split('"')[1::2]).encode()
    assert dkim.verify(got, dnsfunc=lambda name, timeout=5: txt)


@pytest.mark.parametrize("port", ["submissions", "submission", "smtp"])
def test_plaintext_is_refused_with_523_on_every_port(relay, port):
    alice, bob = new_account(relay), new_account(relay)
    data = plain(alice, [bob], PLAIN_MARKER)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        if port == "smtp":
            relay_in(relay, "someone@other.example", [bob], data)
        else:
            submit(relay, alice, [bob], data, port=port)
    assert refused.value.smtp_code == 523
    assert b"Encryption Needed" in refused.value.smtp_error


@pytest.mark.parametrize("port", ["submissions", "smtp"])
def test_unknown_local_recipient_is_refused_at_rcpt(relay, gpg, port):
    alice = new_account(relay)
    nobody = "nobody1234@example.org"
    data = encrypted(alice, [nobody], gpg.encrypt(b"x"), received="")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        if port == "smtp":
            relay_in(relay, "someone@other.example", [nobody], data)
        else:
            submit(relay, alice, [nobody], data)
    assert refused.value.recipients[nobody][0] == 550


def test_from_header_must_be_the_sender(relay, gpg):
    alice, bob = new_account(relay), new_account(relay)
    data = encrypted(bob, [bob], gpg.encrypt(b"x"), received="")  # From: bob, sent by alice
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(relay, alice, [bob], data)
    assert 500 <= refused.value.smtp_code < 600


def test_encrypted_mail_from_another_relay_is_delivered(relay, gpg):
    bob = new_account(relay)
    data = encrypted("carol@other.example", [bob], gpg.encrypt(b"from afar"), received="")
    assert relay_in(relay, "carol@other.example", [bob], data) == {}
    (got,) = inbox(relay, bob)
    assert split(got)[1] == split(data)[1]


def test_filtermail_killed_means_4xx_and_nothing_lost_then_it_is_back(relay, gpg):
    alice, bob = new_account(relay), new_account(relay)
    server = supervise.rpc(relay.layout)
    pid = server.supervisor.getProcessInfo("filtermail-outgoing")["pid"]
    os.kill(pid, signal.SIGKILL)
    data = encrypted(alice, [bob], gpg.encrypt(b"during the restart"), received="")
    try:
        accepted = submit(relay, alice, [bob], data) == {}
    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused) as e:
        code = getattr(e, "smtp_code", None) or next(iter(e.recipients.values()))[0]
        assert 400 <= code < 500, e  # a temporary refusal: the client sends it again
        accepted = False
    expected = 1 if accepted else 0  # what was accepted is delivered, nothing else

    def restarted():
        info = server.supervisor.getProcessInfo("filtermail-outgoing")
        return info["statename"] == "RUNNING" and info["pid"] != pid

    wait_for(restarted, 15, "supervisord to restart filtermail")
    deadline = time.monotonic() + 10
    while True:  # until the new filtermail listens
        try:
            assert submit(relay, alice, [bob], data) == {}
            break
        except smtplib.SMTPException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert len(inbox(relay, bob, expected + 1)) == expected + 1


def test_a_loopback_relay_sends_nothing_off_the_machine(relay, gpg):
    alice = new_account(relay)
    far = "dave@other.example"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        submit(relay, alice, [far], encrypted(alice, [far], gpg.encrypt(b"x"), received=""))
    code, text = refused.value.recipients[far]
    assert code == 550 and b"sends no mail off the machine" in text
    assert "relay=other.example" not in relay.log("postfix.log")


def test_the_daemons_load_no_tls_library(relay):
    """Their console scripts keep asyncio from loading Python's ssl (OpenSSL: ~4 MB each).

    chatmail-metadata is the one that speaks HTTPS (to the push gateway)."""
    infos = supervise.processes(relay.layout)
    others = ("dovecot", "postfix", "metadata")
    daemons = {i["name"]: i["pid"] for i in infos if i["name"] not in others}
    assert set(daemons) == {"doveauth", "lastlogin", "filtermail-outgoing", "filtermail-incoming"}
    for name, pid in daemons.items():
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/_ssl." not in maps, name


def test_logs_hold_no_client_ip_password_or_body(relay):
    """Runs last in this module: every log the relay wrote during the tests above, and for a
    refused plaintext message sent here (so the logs hold something even when run alone)."""
    alice, bob = new_account(relay), new_account(relay)
    with pytest.raises(smtplib.SMTPDataError):
        submit(relay, alice, [bob], plain(alice, [bob], PLAIN_MARKER))
    wait_for(lambda: "523" in relay.log("filtermail-outgoing.log"), 10, "the refusal logged")
    logs = relay.logs()
    assert "postfix.log" in logs and "filtermail-outgoing.log" in logs
    assert "disconnect from unknown[IP]" in logs["postfix.log"]  # scrubbed, not empty
    for name, text in logs.items():
        assert CLIENT_IP not in text, name
        assert PLAIN_MARKER not in text, name
        for password in PASSWORD_OF.values():
            assert password not in text, name
