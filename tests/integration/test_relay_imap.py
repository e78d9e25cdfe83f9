"""IMAP logins against the real Dovecot from Debian, wired to doveauth and lastlogin."""

from __future__ import annotations

import imaplib
import itertools
import os
import signal
import socket
import time

import pytest
from relays import wait_for

PASSWORD = "correct-horse-battery"


# Dovecot delays further logins from an address after failed ones (auth penalty, up to 15 s):
# every connection comes from its own loopback address so one test's failures don't slow others.
_SOURCES = itertools.cycle(f"127.0.{a}.{b}" for a in range(1, 255) for b in range(1, 255))


class LoopbackIMAP(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(next(_SOURCES), 0)
        )


def login(relay, addr: str, password: str = PASSWORD) -> imaplib.IMAP4:
    conn = LoopbackIMAP("127.0.0.1", relay.imap_port, timeout=30)
    conn.login(addr, password)
    return conn


def test_first_login_creates_account_and_mailbox(relay):
    addr = "newuser01@example.org"
    conn = login(relay, addr)
    typ, data = conn.select("INBOX")
    assert typ == "OK" and data == [b"0"]
    conn.logout()
    udir = relay.cfg.mailboxes_dir / addr
    assert (udir / "password").read_text().startswith("{SHA512-CRYPT}$6$")
    assert (udir / "enforceE2EEincoming").exists()
    assert (udir / "cur").is_dir()  # Dovecot made its maildir in the account's home
    assert f"created account {addr}" in relay.log("doveauth.log")


def test_wrong_password_fails_then_right_one_succeeds(relay):
    addr = "newuser02@example.org"
    login(relay, addr).logout()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(relay, addr, "wrong-password-here")
    login(relay, addr).logout()


def test_uppercase_login_reaches_the_lowercase_account(relay):
    login(relay, "newuser03@example.org").logout()
    login(relay, "NewUser03@Example.org").logout()


@pytest.mark.parametrize(
    ("addr", "password"),
    [
        ("short@example.org", PASSWORD),
        ("waytoolong1@example.org", PASSWORD),
        ("newuser04@example.org", "short"),
        ("newuser05@other.example", PASSWORD),
    ],
)
def test_refused_new_accounts_cannot_log_in(relay, addr, password):
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(relay, addr, password)
    assert not (relay.cfg.mailboxes_dir / addr.lower()).exists()


def test_doveadm_lists_accounts(relay):
    for addr in ("listme001@example.org", "listme002@example.org"):
        login(relay, addr).logout()
    result = relay.doveadm("user", "*")
    assert result.returncode == 0, result.stderr
    users = result.stdout.split()
    assert {"listme001@example.org", "listme002@example.org"} <= set(users)


def test_last_login_sets_the_day(relay):
    addr = "lastlogi1@example.org"
    login(relay, addr).logout()
    password = relay.cfg.mailboxes_dir / addr / "password"
    os.utime(password, (86400 * 3, 86400 * 3))
    login(relay, addr).logout()
    now = time.time()
    today = now - now % 86400
    wait_for(lambda: password.stat().st_mtime == today, what="password mtime set to today")


def test_logs_keep_no_client_ip_or_password(relay):
    addr = "privacy01@example.org"
    login(relay, addr).logout()
    dovecot_log = relay.log("dovecot.log")
    assert f"Login: user=<{addr}>, method=PLAIN" in dovecot_log
    assert "rip=" not in dovecot_log
    for name in ("dovecot.log", "doveauth.log", "lastlogin.log"):
        assert PASSWORD not in relay.log(name)


def test_doveauth_killed_and_restarted_while_dovecot_runs(relay):
    addr = "survivor1@example.org"
    login(relay, addr).logout()
    pid = int(relay.ctl("pid", "doveauth").strip())
    os.kill(pid, signal.SIGKILL)
    # supervisord restarts doveauth; Dovecot reconnects on its next lookup

    def logs_in() -> bool:
        try:
            login(relay, addr).logout()
        except imaplib.IMAP4.error:
            return False
        return True

    wait_for(logs_in, timeout=30, what="login after doveauth restart")
    assert int(relay.ctl("pid", "doveauth").strip()) != pid
    login(relay, "afterkill@example.org").logout()  # creation works again too


def test_doveauth_stopped_gives_temporary_failure_then_recovers(relay):
    addr = "tempfail1@example.org"
    login(relay, addr).logout()
    relay.ctl("stop", "doveauth")
    try:
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            login(relay, addr, "secret-while-down-1")
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            login(relay, "unknown01@example.org", "secret-while-down-2")
    finally:
        relay.ctl("start", "doveauth")
    login(relay, addr).logout()
    # Dovecot logs the key of a failed dict lookup: the relay's keys for it carry no password
    log = relay.log("dovecot.log")
    assert "shared/passdb/" in log
    assert "secret-while-down" not in log
