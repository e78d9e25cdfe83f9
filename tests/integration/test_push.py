"""Push on a whole relay: SETMETADATA, Dovecot's push hook on LMTP delivery, chatmail-metadata and
a stand-in push gateway (HTTPS on loopback with its own certificate, which the relay's notifier
verifies: ``SSL_CERT_FILE`` in the daemons' environment)."""

from __future__ import annotations

import imaplib
import json
import os
import secrets
import signal
import smtplib
import ssl
import time

import pytest
from mails import Gpg, encrypted
from pushgateway import Gateway
from relays import start_relay, stop_relay, wait_for

from relay import supervise

TLS = ssl._create_unverified_context()  # the relay's self-signed certificate
for command in ("SETMETADATA", "GETMETADATA"):
    imaplib.Commands.setdefault(command, ("AUTH", "SELECTED"))


@pytest.fixture(scope="module")
def world():
    gateway = Gateway()
    relay = start_relay(
        f"notification_url = {gateway.url}\niroh_relay = https://iroh.example.org\n"
        "max_user_send_burst_size = 1000\n",
        environ={"SSL_CERT_FILE": str(gateway.ca_file)},
    )
    gpg = Gpg()
    yield relay, gateway, gpg
    gpg.close()
    stop_relay(relay)
    gateway.close()


def account(relay) -> tuple[str, str]:
    addr, password = f"{secrets.token_hex(5)[:9]}@example.org", secrets.token_urlsafe(12)
    with imaplib.IMAP4_SSL("127.0.0.1", relay.ports.imaps, ssl_context=TLS) as imap:
        imap.login(addr, password)
    return addr, password


def imap_session(relay, addr: str, password: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", relay.ports.imaps, ssl_context=TLS)
    imap.login(addr, password)
    return imap


def set_token(imap: imaplib.IMAP4, token: str) -> None:
    typ, data = imap._simple_command("SETMETADATA", "INBOX", f'(/private/devicetoken "{token}")')
    assert typ == "OK", data


def get_metadata(imap: imaplib.IMAP4, mailbox: str, key: str) -> bytes:
    typ, data = imap._simple_command("GETMETADATA", mailbox, key)
    assert typ == "OK", data
    _, untagged = imap._untagged_response(typ, data, "METADATA")
    return b"".join(part if isinstance(part, bytes) else b"".join(part) for part in untagged)


def send(relay, addr: str, password: str, rcpt: str, gpg) -> None:
    message = encrypted(addr, [rcpt], gpg.encrypt(b"wake up"), received="")
    with smtplib.SMTP_SSL("127.0.0.1", relay.ports.submissions, context=TLS) as smtp:
        smtp.login(addr, password)
        smtp.sendmail(addr, [rcpt], message)


def test_capabilities_after_login(world):
    relay, _, _ = world
    imap = imap_session(relay, *account(relay))
    with imap:
        _, data = imap.capability()
    caps = set(data[0].decode().upper().split())
    assert {"XDELTAPUSH", "XCHATMAIL", "METADATA"} <= caps


def test_two_tokens_are_kept_and_a_delivery_reaches_the_gateway_with_both(world):
    relay, gateway, gpg = world
    alice, bob = account(relay), account(relay)
    t1, t2 = f"tok-{secrets.token_hex(8)}", f"tok-{secrets.token_hex(8)}"
    with imap_session(relay, *alice) as imap:
        set_token(imap, t1)
        set_token(imap, t2)
        assert get_metadata(imap, "INBOX", "/private/devicetoken").count(b"tok-") == 2
    stored = json.loads((relay.cfg.mailboxes_dir / alice[0] / "metadata.json").read_text())
    assert set(stored["devicetoken"]) == {t1, t2}
    send(relay, *bob, alice[0], gpg)
    sent = time.monotonic()
    wait_for(lambda: {t1, t2} <= set(gateway.tokens()), 10, "both tokens at the gateway")
    # from the end of the submission: Postfix's queue, LMTP, the hook, the queue file, HTTPS
    assert max(gateway.arrived(t1), gateway.arrived(t2)) - sent < 1.0
    assert t1 not in relay.log("metadata.log") and t2 not in relay.log("metadata.log")


def test_mail_to_oneself_notifies_nobody(world):
    relay, gateway, gpg = world
    alice = account(relay)
    token = f"self-{secrets.token_hex(8)}"
    with imap_session(relay, *alice) as imap:
        set_token(imap, token)
    send(relay, *alice, alice[0], gpg)
    with imap_session(relay, *alice) as imap:  # delivered
        wait_for(lambda: imap.select("INBOX")[1][0] != b"0", 10, "the message to arrive")
    time.sleep(1)
    assert token not in gateway.tokens()


def test_a_dead_token_is_removed(world):
    relay, gateway, gpg = world
    alice, bob = account(relay), account(relay)
    dead, alive = f"dead-{secrets.token_hex(8)}", f"alive-{secrets.token_hex(8)}"
    gateway.dead.add(dead)
    with imap_session(relay, *alice) as imap:
        set_token(imap, dead)
        set_token(imap, alive)
    send(relay, *bob, alice[0], gpg)
    path = relay.cfg.mailboxes_dir / alice[0] / "metadata.json"
    wait_for(lambda: dead not in json.loads(path.read_text())["devicetoken"], 10, "410 to apply")
    assert alive in json.loads(path.read_text())["devicetoken"]


def test_server_values_can_be_read(world):
    relay, _, _ = world
    with imap_session(relay, *account(relay)) as imap:
        iroh = get_metadata(imap, '""', "/shared/vendor/deltachat/irohrelay")
        limit = get_metadata(imap, '""', "/shared/vendor/deltachat/maxsmtprecipients")
        turn = get_metadata(imap, '""', "/shared/vendor/deltachat/turn")
    assert b"https://iroh.example.org" in iroh
    assert b"1000" in limit
    assert b"NIL" in turn  # no TURN service here: no value, no error


def queued(relay) -> int:
    return sum(1 for p in relay.cfg.notification_queue_dir.glob("*.json"))


def test_gateway_down_then_up_delivers_after_a_retry(world):
    relay, gateway, gpg = world
    alice, bob = account(relay), account(relay)
    token = f"retry-{secrets.token_hex(8)}"
    with imap_session(relay, *alice) as imap:
        set_token(imap, token)
    gateway.stop()
    try:
        send(relay, *bob, alice[0], gpg)
        wait_for(lambda: "unreachable" in relay.log("metadata.log"), 10, "a refused try")
        assert token not in gateway.tokens()
        assert queued(relay) >= 1
    finally:
        gateway.start()
    wait_for(lambda: token in gateway.tokens(), 15, "the retry to reach the gateway")
    wait_for(lambda: "takes notifications again" in relay.log("metadata.log"), 5, "the log line")


def test_notifications_queued_when_the_daemon_is_killed_are_all_delivered(world):
    relay, gateway, gpg = world
    bob = account(relay)
    users = [account(relay) for _ in range(3)]
    tokens = {}
    for addr, password in users:
        tokens[addr] = [f"kill-{secrets.token_hex(8)}" for _ in range(2)]
        with imap_session(relay, addr, password) as imap:
            for token in tokens[addr]:
                set_token(imap, token)
    expected = {t for pair in tokens.values() for t in pair}
    gateway.stop()
    try:
        for addr, _ in users:
            send(relay, *bob, addr, gpg)
        wait_for(lambda: queued(relay) >= 6, 15, "six notifications queued")
        server = supervise.rpc(relay.layout)
        pid = server.supervisor.getProcessInfo("metadata")["pid"]
        os.kill(pid, signal.SIGKILL)  # no clean stop: only the queue files remain

        def restarted() -> bool:
            info = server.supervisor.getProcessInfo("metadata")
            return info["statename"] == "RUNNING" and info["pid"] != pid

        wait_for(restarted, 15, "supervisord to restart chatmail-metadata")
        assert not expected & set(gateway.tokens())
    finally:
        gateway.start()
    wait_for(lambda: expected <= set(gateway.tokens()), 20, "every queued notification")
    wait_for(lambda: queued(relay) == 0, 5, "the queue to empty")
