"""Push on a whole relay: SETMETADATA, Dovecot's push hook on LMTP delivery, chatmail-metadata and
a stand-in push gateway (an HTTP server this test starts on loopback)."""

from __future__ import annotations

import imaplib
import json
import secrets
import smtplib
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mails import Gpg, encrypted
from relays import start_relay, stop_relay, wait_for

TLS = ssl._create_unverified_context()  # the relay's self-signed certificate
for command in ("SETMETADATA", "GETMETADATA"):
    imaplib.Commands.setdefault(command, ("AUTH", "SELECTED"))


class Gateway:
    """Records each POST body; answers 410 for tokens in ``dead``, else 200."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.dead: set[str] = set()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                gateway.received.append(body)
                self.send_response(410 if body in gateway.dead else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world():
    gateway = Gateway()
    relay = start_relay(
        f"notification_url = {gateway.url}\niroh_relay = https://iroh.example.org\n"
        "max_user_send_burst_size = 1000\n"
    )
    gpg = Gpg()
    yield relay, gateway, gpg
    gpg.close()
    stop_relay(relay)
    gateway.stop()


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
    began = time.monotonic()
    send(relay, *bob, alice[0], gpg)
    wait_for(lambda: {t1, t2} <= set(gateway.received), 10, "both tokens at the gateway")
    assert time.monotonic() - began < 5  # the 1 s is measured by the bench
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
    assert token not in gateway.received


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
