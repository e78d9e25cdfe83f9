"""The end-to-end proof: Delta Chat's own client on a relay that ``chatmail-relay up`` started.

The relay is the README's first command's code path (the installed ``chatmail-relay up``) for
the IP-only domain 127.0.0.1, in a temp dir with its own ports (tests/e2e/dc.py). Two accounts
come from the ``dclogin:`` URLs two runs of ``up`` printed; each runs in its own
``deltachat-rpc-server`` (PyPI's Delta Chat core), as on two phones. They meet by a QR
secure-join and chat encrypted both ways, with an attachment; what Dovecot stored is OpenPGP
(RFC 3156) with the subject hidden; and plaintext sent with the same password is refused.

Push: the relay's notifier posts to a stand-in gateway (HTTPS on loopback, tests/pushgateway.py).
The device token is set with IMAP SETMETADATA on the account's login, as the Delta Chat apps do
through the core: deltachat-rpc-server offers no call to register a token (the mobile apps get
theirs from the phone's push service).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import imaplib
import os
import re
import secrets
import smtplib
import ssl
import time
from pathlib import Path

import pytest
from dc import Device, Login, UpRelay, rpc_server_path  # deltachat-rpc-client: the test extra
from helpers_env import require, require_binary, require_root
from pushgateway import Gateway

TLS = ssl._create_unverified_context()  # the relay's self-signed certificate
DELIVERY_TIMEOUT = 15
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))


@pytest.fixture(scope="module")
def gateway():
    gateway = Gateway()
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def relay_up(request, gateway: Gateway):
    require_root()
    for binary in ("dovecot", "postfix", "supervisord", "supervisorctl"):
        require_binary(binary)
    require(rpc_server_path().exists(), f"{rpc_server_path()} missing: pip install '.[test]'")
    failed_before = request.session.testsfailed
    relay = UpRelay(environ={"SSL_CERT_FILE": str(gateway.ca_file)}, notification_url=gateway.url)
    yield relay
    relay.down(keep_files=request.session.testsfailed > failed_before)


@pytest.fixture(scope="module")
def logins(relay_up: UpRelay) -> tuple[Login, Login]:
    """Two accounts, one from each run of ``up``: running it again restarts nothing."""
    first = relay_up.up()
    supervisord = relay_up.supervisord_pid()
    second = relay_up.up()
    assert relay_up.supervisord_pid() == supervisord
    assert first.addr != second.addr
    return first, second


@pytest.fixture(scope="module")
def devices(relay_up: UpRelay, logins: tuple[Login, Login]):
    """Alice's and Bob's Delta Chat, each configured from its URL and online."""
    started: list[Device] = []
    try:
        for name, login in zip(("alice", "bob"), logins, strict=True):
            started.append(Device.start(relay_up.tmp / f"deltachat-{name}", login))
        yield tuple(started)
    finally:
        for device in started:
            device.stop()


@pytest.fixture(scope="module")
def chats(devices: tuple[Device, Device]):
    """Bob scans Alice's QR code; both sides report the secure-join done (progress 1000)."""
    alice, bob = devices
    bob_chat = bob.account.secure_join(alice.account.get_qr_code())
    done = alice.wait_for("SecurejoinInviterProgress", 30, lambda e: e.progress == 1000)
    bob.wait_for("SecurejoinJoinerProgress", 30, lambda e: e.progress == 1000)
    alice_chat = alice.account.get_contact_by_id(done.contact_id).create_chat()
    return alice_chat, bob_chat


def received(device: Device, chat_id: int):
    """The next message arriving in ``chat_id``, fully downloaded."""
    event = device.wait_for("IncomingMsg", DELIVERY_TIMEOUT, lambda e: e.chat_id == chat_id)
    snapshot = device.account.get_message_by_id(event.msg_id).get_snapshot()
    assert snapshot.download_state == "Done"
    return snapshot


def message_id(device: Device, msg_id: int) -> str:
    info = device.account.get_message_by_id(msg_id).get_info()
    return re.search(r"^Message-ID: (\S+)$", info, flags=re.MULTILINE).group(1)


def wait_stored(relay: UpRelay, addr: str, mid: str) -> email.message.EmailMessage:
    """The message with Message-ID ``mid`` once Dovecot stored it in ``addr``'s maildir."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        for raw in relay.stored_messages(addr):
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            if msg["Message-ID"] == f"<{mid}>":
                return msg
        time.sleep(0.1)
    raise AssertionError(f"<{mid}> not in {addr}'s maildir after {DELIVERY_TIMEOUT}s")


def test_secure_join_then_encrypted_chat_both_ways_with_an_attachment(
    relay_up: UpRelay, devices: tuple[Device, Device], chats, tmp_path: Path
):
    alice, bob = devices
    alice_chat, bob_chat = chats

    # Bob is offline: Alice's message waits in his maildir, where we read it as stored
    bob.account.stop_io()
    text = f"hello Bob {secrets.token_hex(4)}"
    sent = alice_chat.send_text(text)
    alice.wait_for("MsgDelivered", DELIVERY_TIMEOUT, lambda e: e.msg_id == sent.id)
    stored = wait_stored(relay_up, bob.addr, message_id(alice, sent.id))
    assert stored.get_content_type() == "multipart/encrypted"
    assert stored.get_param("protocol") == "application/pgp-encrypted"
    assert stored["Subject"] == "[...]"
    assert text not in stored.as_string()
    bob.account.start_io()
    got = received(bob, bob_chat.id)
    assert got.text == text and got.show_padlock

    payload = os.urandom(5000)
    path = tmp_path / "notes.bin"
    path.write_bytes(payload)
    bob_chat.send_message(text="the notes, Alice", file=str(path))
    got = received(alice, alice_chat.id)
    assert got.text == "the notes, Alice" and got.show_padlock
    assert got.file_name == "notes.bin"
    assert Path(got.file).read_bytes() == payload


def test_plaintext_with_the_accounts_password_is_refused_with_523(
    relay_up: UpRelay, devices: tuple[Device, Device]
):
    alice, bob = devices
    plain = (
        f"From: <{alice.addr}>\r\nTo: <{bob.addr}>\r\nSubject: plain\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nnot encrypted\r\n"
    )
    with smtplib.SMTP_SSL(
        "127.0.0.1", relay_up.port("submissions"), context=TLS, timeout=30
    ) as smtp:
        smtp.login(alice.addr, alice.login.password)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(alice.addr, [bob.addr], plain.encode())
    assert refused.value.smtp_code == 523, refused.value
    assert b"Encryption Needed" in refused.value.smtp_error


def test_a_message_from_bob_wakes_alices_phone(
    relay_up: UpRelay, devices: tuple[Device, Device], chats, gateway: Gateway
):
    alice, bob = devices
    alice_chat, bob_chat = chats
    token = f"e2e-{secrets.token_hex(12)}"
    with imaplib.IMAP4_SSL("127.0.0.1", relay_up.port("imaps"), ssl_context=TLS) as imap:
        imap.login(alice.addr, alice.login.password)
        typ, data = imap._simple_command(
            "SETMETADATA", "INBOX", f'(/private/devicetoken "{token}")'
        )
        assert typ == "OK", data
    assert token not in gateway.tokens()
    sent = bob_chat.send_text("wake up, Alice")
    bob.wait_for("MsgDelivered", DELIVERY_TIMEOUT, lambda e: e.msg_id == sent.id)
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while token not in gateway.tokens():
        assert time.monotonic() < deadline, "the push gateway never heard of Alice's new mail"
        time.sleep(0.05)
    assert received(alice, alice_chat.id).text == "wake up, Alice"
    assert gateway.tokens().count(token) == 1  # one message, one wake-up
    assert bob.addr not in relay_up.status()  # status names no account
