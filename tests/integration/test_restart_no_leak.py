"""Logins racing a doveauth restart: none fails, and no password reaches any log.

Dovecot logs the key of a dict lookup that fails, and the key of the creating lookup holds the
password; a restart hands doveauth's sockets to its successor (chatmaild.handoff) so that no
lookup fails. Both ways a relay restarts doveauth are raced: ``supervisorctl restart`` and
``up`` after a chatmail.ini change.
"""

from __future__ import annotations

import imaplib
import secrets
import threading
import time
from collections.abc import Callable

import pytest
from relays import wait_for

from relay import supervise

pytestmark = pytest.mark.integration


class SignUps:
    """Threads logging in new accounts, each with its own password, until stopped."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.passwords: list[str] = []
        self.failures: list[str] = []
        self.logins = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            addr = f"{secrets.token_hex(5)[:9]}@example.org"
            password = "Pw" + secrets.token_hex(10)
            self.passwords.append(password)
            try:
                imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=40)
                imap.login(addr, password)
                imap.logout()
                self.logins += 1
            except (imaplib.IMAP4.error, OSError) as exc:
                self.failures.append(f"{addr}: {exc}")

    def __enter__(self) -> SignUps:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def _race(relay, restart: Callable[[int], None], restarts: int = 3) -> SignUps:
    with SignUps(relay.imap_port) as signups:
        for i in range(restarts):
            time.sleep(0.7)
            before = relay.ctl("pid", "doveauth").strip()
            restart(i)
            wait_for(
                lambda before=before: relay.ctl("pid", "doveauth").strip() not in ("", before),
                timeout=30,
                what="a new doveauth",
            )
        time.sleep(0.7)
    return signups


def _assert_nothing_lost_or_leaked(relay, signups: SignUps) -> None:
    assert signups.logins > 20, "the sign-ups did not run while doveauth restarted"
    assert signups.failures == []
    for name, text in relay.logs().items():
        leaked = [pw for pw in signups.passwords if pw in text]
        assert leaked == [], f"{name} holds passwords"
    assert "Failed to lookup key" not in relay.log("dovecot.log")
    assert "took over the socket" in relay.log("doveauth.log")


def test_supervisorctl_restart_during_sign_ups(relay):
    signups = _race(relay, lambda _i: relay.ctl("restart", "doveauth"))
    _assert_nothing_lost_or_leaked(relay, signups)


def test_up_after_a_chatmail_ini_change_during_sign_ups(relay):
    ini = relay.cfg.path
    original = ini.read_text()

    def change_and_up(i: int) -> None:
        ini.write_text(original + f"max_user_send_per_minute = {61 + i}\n")
        supervise.up(relay.cfg, relay.layout, relay.params, timeout=60)

    try:
        signups = _race(relay, change_and_up)
    finally:
        ini.write_text(original)
    _assert_nothing_lost_or_leaked(relay, signups)
