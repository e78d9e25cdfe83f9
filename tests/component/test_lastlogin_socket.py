"""lastlogin driven over its Unix socket as Dovecot's last_login plugin drives it."""

from __future__ import annotations

import os
from pathlib import Path

from daemons import Daemon, start_daemon
from dictclient import DictClient

ADDR = "abcdefghi@example.org"
NOW = 1795696977  # 2026-11-26 12:42:57 UTC
DAY = 1795651200  # 2026-11-26 00:00:00 UTC


def make_account(daemon: Daemon, addr: str = ADDR) -> Path:
    """An account as doveauth leaves it: owned by the daemons' user, last login long ago."""
    udir = daemon.mailboxes / addr
    udir.mkdir(parents=True)
    (udir / "password").write_text("{SHA512-CRYPT}$6$x$y")
    os.utime(udir / "password", (1000, 1000))
    daemon.give(daemon.mailboxes)
    return udir / "password"


def commit(client: DictClient, tid: int, *lines: str) -> bytes:
    # the exact sequence Dovecot 2.3.19 sends: B<id>\t<user>, S<id>\t<key>\t<value>, C<id>
    client.send(f"B{tid}\t{ADDR}\n".encode())
    for line in lines:
        client.send(line.encode() + b"\n")
    client.send(f"C{tid}\n".encode())
    return client.readline()


def test_login_sets_password_mtime_to_the_day(lastlogin):
    password = make_account(lastlogin)
    with DictClient(lastlogin.socket, "lastlogin") as c:
        assert commit(c, 1, f"S1\tshared/last-login/{ADDR}\t{NOW}") == b"O1\n"
    assert password.stat().st_mtime == DAY


def test_unknown_account_fails_and_writes_nothing(lastlogin):
    with DictClient(lastlogin.socket, "lastlogin") as c:
        reply = commit(c, 7, f"S7\tshared/last-login/nosuchusr@example.org\t{NOW}")
    assert reply == b"F7\n"
    assert not lastlogin.mailboxes.exists()
    assert "no account nosuchusr@example.org" in lastlogin.log_text()


def test_hostile_or_malformed_changes_fail_and_write_nothing(lastlogin):
    password = make_account(lastlogin)
    bad = [
        f"S2\tshared/last-login/../../{ADDR}\t{NOW}",
        f"S2\tshared/last-login/{ADDR}\tyesterday",
        f"S2\tshared/last-login/{ADDR}\t-5",
        f"S2\tshared/other/{ADDR}\t{NOW}",
        f"U2\tshared/last-login/{ADDR}",
    ]
    with DictClient(lastlogin.socket, "lastlogin") as c:
        for line in bad:
            # the good change is refused too: a transaction is applied whole or not at all
            assert commit(c, 2, f"S2\tshared/last-login/{ADDR}\t{NOW}", line) == b"F2\n", line
        # an unparsable line is answered with F at once; the empty transaction then commits
        assert commit(c, 3, "garbage") == b"F\n"
        assert c.readline() == b"O3\n"
    assert password.stat().st_mtime == 1000


def test_rollback_and_unknown_transactions(lastlogin):
    password = make_account(lastlogin)
    with DictClient(lastlogin.socket, "lastlogin") as c:
        c.send(f"B4\t{ADDR}\nS4\tshared/last-login/{ADDR}\t{NOW}\nR4\n".encode())
        c.send(b"C4\n")
        assert c.readline() == b"F4\n"
        c.send(f"B5\t{ADDR}\nS5\tshared/last-login/{ADDR}\t{NOW}\nD5\n".encode())
        assert c.readline() == b"AO5\n"
    assert password.stat().st_mtime == DAY


def test_account_the_daemon_may_not_touch_fails_and_says_why(tmp_path, vmail):
    # as in production lastlogin runs as vmail: a password file it does not own (made by root,
    # say by a restore) cannot take the login day; the operator is told which account
    daemon = start_daemon("doveauth.lastlogin", tmp_path, user=vmail)
    try:
        udir = daemon.mailboxes / ADDR
        udir.mkdir(parents=True)
        (udir / "password").write_text("{SHA512-CRYPT}$6$x$y")
        os.utime(udir / "password", (1000, 1000))
        with DictClient(daemon.socket, "lastlogin") as c:
            assert commit(c, 1, f"S1\tshared/last-login/{ADDR}\t{NOW}") == b"F1\n"
        assert (udir / "password").stat().st_mtime == 1000
        assert f"cannot record login of {ADDR}" in daemon.log_text()
    finally:
        daemon.stop()
