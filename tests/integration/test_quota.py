"""Quota on a whole relay: Dovecot's quota plugin, its warning hook (chatmail-quota-expire) and
chatmail-expire, against the real Postfix and Dovecot started from the ``relay/`` rendering.

The relay's quota is 2 MiB (``max_mailbox_size = 2M``): Dovecot's warning fires at 90%, and
chatmail-quota-expire trims to 1 MiB (70% of 2 MiB, in whole MiB). Mail is filled in straight
over Dovecot's LMTP socket (quick); the deliveries that matter go through Postfix (submission,
filtermail, reinjection, LMTP), as a chat app's would.

chatmail-quota-expire never removes a message younger than 24 hours, and chatmail-expire only
removes mail older than ``delete_mails_after`` days. A test cannot wait that long: it makes its
old mail old by setting the files' mtime (``os.utime``), which is what a real mailbox's old
mail looks like to both (Dovecot keeps a message's delivery time as its file's mtime).
"""

from __future__ import annotations

import imaplib
import os
import re
import secrets
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from mails import armored, encrypted
from relays import Relay, bin_dir, start_relay, stop_relay, wait_for

TLS = ssl._create_unverified_context()  # the relay's self-signed certificate
MIB = 1024 * 1024
LIMIT = 2 * MIB
WARNING = 0.9 * LIMIT
TARGET = 1 * MIB  # what the relay renders as chatmail-quota-expire's TARGET_MB
DAY = 86400
PASSWORDS: dict[str, str] = {}


@pytest.fixture(scope="module")
def relay():
    relay = start_relay("max_mailbox_size = 2M\nmax_user_send_burst_size = 1000\n")
    yield relay
    stop_relay(relay)


def account(relay: Relay) -> str:
    """A new account, created by its first IMAP login (as a chat app does)."""
    addr = f"{secrets.token_hex(5)[:9]}@example.org"
    PASSWORDS[addr] = secrets.token_urlsafe(16)
    imap_session(relay, addr).logout()
    return addr


def imap_session(relay: Relay, addr: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", relay.ports.imaps, ssl_context=TLS, timeout=30)
    imap.login(addr, PASSWORDS[addr])
    return imap


def message(sender: str, rcpt: str, size: int) -> bytes:
    """An encrypted message (a hand-built OpenPGP stream) of about ``size`` bytes as stored."""
    # base64 (4/3) in lines of 64 characters and a line end
    return encrypted(sender, [rcpt], armored(max(size - 1200, 100) * 48 // 65), received="")


def lmtp_deliver(relay: Relay, sender: str, rcpt: str, data: bytes) -> None:
    """Deliver as Postfix does, straight to Dovecot's LMTP socket (root may open it)."""
    with smtplib.LMTP(str(relay.layout.lmtp_socket)) as lmtp:
        lmtp.sendmail(sender, [rcpt], data)


def submit(relay: Relay, sender: str, rcpt: str, data: bytes) -> None:
    """Send as a chat app does: SMTP AUTH on submissions, then Postfix delivers over LMTP."""
    with smtplib.SMTP_SSL("127.0.0.1", relay.ports.submissions, context=TLS) as smtp:
        smtp.login(sender, PASSWORDS[sender])
        assert smtp.sendmail(sender, [rcpt], data) == {}


def message_files(home: Path) -> list[Path]:
    """The files of INBOX (Dovecot makes new/ and cur/ at the first delivery or SELECT)."""
    dirs = [home / sub for sub in ("new", "cur") if (home / sub).is_dir()]
    return [p for d in dirs for p in d.iterdir()]


def usage(home: Path) -> int:
    """The bytes of the mailbox's messages, as Dovecot's maildir quota counts them."""
    return sum(p.stat().st_size for p in message_files(home))


def young(home: Path) -> list[Path]:
    return [p for p in message_files(home) if p.stat().st_mtime > time.time() - DAY]


def delivered(path: Path) -> tuple[int, int]:
    """When Dovecot delivered a message, from its file name: ``<unix time>.M<usec>P<pid>...``."""
    match = re.match(r"(\d+)\.M(\d+)P", path.name)
    assert match, path.name
    return int(match[1]), int(match[2])


def base(path: Path) -> str:
    """A message file's name without Dovecot's flags suffix (``:2,S``)."""
    return path.name.split(":")[0]


def make_old(paths: list[Path], days: float) -> dict[Path, float]:
    """Date these messages about ``days`` back, a minute apart in delivery order, as a real
    mailbox's old mail is: Dovecot keeps a message's delivery time as its file's mtime."""
    start = time.time() - days * DAY
    ages = {path: start + 60 * i for i, path in enumerate(sorted(paths, key=delivered))}
    for path, when in ages.items():
        os.utime(path, (when, when))
    return ages


def fill(relay: Relay, sender: str, rcpt: str, upto: float, size: int = 100_000) -> None:
    """LMTP-deliver messages of about ``size`` bytes while the next one stays under ``upto``."""
    home = relay.cfg.mailboxes_dir / rcpt
    while usage(home) + 1.1 * size < upto:
        lmtp_deliver(relay, sender, rcpt, message(sender, rcpt, size))


def storage(imap: imaplib.IMAP4) -> tuple[int, int]:
    """(used, limit) in KiB of INBOX's quota root, from GETQUOTAROOT (RFC 2087)."""
    typ, data = imap.getquotaroot("INBOX")
    assert typ == "OK", data
    roots, quotas = data
    assert roots == [b'INBOX "User quota"'], roots
    (quota,) = quotas
    match = re.fullmatch(rb'"User quota" \(STORAGE (\d+) (\d+)\)', quota)
    assert match, quota
    return int(match.group(1)), int(match.group(2))


def mine(relay: Relay, addr: str) -> str:
    """Postfix's log lines about deliveries to ``addr``."""
    return "\n".join(
        line for line in relay.log("postfix.log").splitlines() if f"to=<{addr}>" in line
    )


def chatmail_expire(relay: Relay, *args: str) -> subprocess.CompletedProcess:
    """The installed console script, as the daily job runs it: as vmail."""
    return subprocess.run(
        [str(bin_dir() / "chatmail-expire"), str(relay.cfg.path), "--remove", *args],
        user=relay.cfg.vmail_user,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


class Idle:
    """An IMAP IDLE (RFC 2177) on an imaplib session, which has no IDLE of its own before 3.14."""

    def __init__(self, imap: imaplib.IMAP4) -> None:
        self.imap = imap
        self.tag = imap._new_tag()
        imap.send(self.tag + b" IDLE\r\n")
        assert imap.readline().startswith(b"+ "), "no IDLE continuation"

    def until(self, count: int, what: bytes, timeout: float = 10) -> list[bytes]:
        """Untagged responses until ``count`` of them end in ``what`` (say b"EXPUNGE")."""
        lines, deadline = [], time.monotonic() + timeout
        while sum(line.rstrip().endswith(what) for line in lines) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"only these in {timeout} s: {lines}"
            self.imap.sock.settimeout(remaining)
            lines.append(self.imap.readline())
        return lines

    def done(self) -> None:
        self.imap.sock.settimeout(30)
        self.imap.send(b"DONE\r\n")
        while not (line := self.imap.readline()).startswith(self.tag):
            pass
        assert line.split()[1] == b"OK", line


def uid_sizes(imap: imaplib.IMAP4) -> dict[int, int]:
    typ, data = imap.uid("FETCH", "1:*", "(RFC822.SIZE)")
    assert typ == "OK", data
    found = (
        re.search(rb"UID (\d+) RFC822.SIZE (\d+)|RFC822.SIZE (\d+) UID (\d+)", d) for d in data
    )
    return {int(m[1] or m[4]): int(m[2] or m[3]) for m in found if m}


def test_getquotaroot_shows_the_quota_of_max_mailbox_size(relay):
    alice = account(relay)
    lmtp_deliver(relay, alice, alice, message(alice, alice, 50_000))
    with imap_session(relay, alice) as imap:
        used, limit = storage(imap)
    assert limit == LIMIT // 1024
    assert used == pytest.approx(usage(relay.cfg.mailboxes_dir / alice) / 1024, abs=1)


def test_the_delivery_that_crosses_the_warning_trims_old_mail_and_mail_flows_again(relay):
    sender, alice = account(relay), account(relay)
    home = relay.cfg.mailboxes_dir / alice
    log_start = len(relay.log("dovecot.log"))
    fill(relay, sender, alice, 0.8 * LIMIT)
    old = make_old(message_files(home), days=2)  # chatmail-quota-expire spares the last day
    sizes = {p: p.stat().st_size for p in old}
    before = usage(home)
    assert 0.7 * LIMIT < before < WARNING
    # through Postfix: a message that takes the mailbox to about 95%
    submit(relay, sender, alice, message(sender, alice, int(0.95 * LIMIT) - before))

    def trimmed() -> bool:
        return len(young(home)) == 1 and usage(home) <= TARGET

    wait_for(trimmed, 15, "the crossing message, and the mailbox trimmed to 1 MiB")
    (crossing,) = young(home)
    assert before + crossing.stat().st_size > WARNING  # it did cross the warning
    kept = [p for p in old if p.exists()]
    removed = [p for p in old if not p.exists()]
    assert removed and kept  # the oldest went, only as many as needed
    assert max(old[p] for p in removed) < min(old[p] for p in kept)
    # ... and it stopped as soon as the mailbox was small enough
    last = max(removed, key=old.__getitem__)
    assert usage(home) + sizes[last] > TARGET
    # chatmail-quota-expire removed maildirsize: Dovecot counts again, it does not trust it
    assert not (home / "maildirsize").exists()
    with imap_session(relay, alice) as imap:
        used, limit = storage(imap)
    assert limit == LIMIT // 1024
    assert used == pytest.approx(usage(home) / 1024, abs=1)
    # recounted from the files, not the stale count (which was over 90%)
    assert (home / "maildirsize").read_text().startswith(f"{LIMIT}S\n")

    # room again: a message that did not fit the full mailbox arrives
    big = message(sender, alice, 400_000)
    assert before + crossing.stat().st_size + len(big) > LIMIT
    submit(relay, sender, alice, big)
    wait_for(lambda: len(young(home)) == 2, 15, "the next message to arrive")
    with imap_session(relay, alice) as imap:
        typ, data = imap.select("INBOX")
    assert typ == "OK" and int(data[0]) == len(kept) + 2
    # lmtp reached the hook's socket (vmail's only) and the script succeeded: a refused
    # connection or a failing script would be logged as an Error of lmtp or quota-warning
    new_lines = relay.log("dovecot.log")[log_start:]
    assert "quota-warning" not in new_lines, new_lines
    assert "Error" not in new_lines, new_lines


def test_a_full_mailbox_defers_mail_and_nothing_is_lost_once_it_is_trimmed(relay):
    sender, alice = account(relay), account(relay)
    home = relay.cfg.mailboxes_dir / alice
    fill(relay, sender, alice, 0.98 * LIMIT, size=150_000)
    fill(relay, sender, alice, 0.98 * LIMIT, size=20_000)
    # all of it is young: the warning's hook could remove nothing, the mailbox stays full
    full = usage(home)
    assert full > WARNING
    data = message(sender, alice, 300_000)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        lmtp_deliver(relay, sender, alice, data)
    assert refused.value.smtp_code == 452  # temporary: quota_full_tempfail
    assert refused.value.smtp_error.startswith(b"4.2.2 ")
    # through Postfix the message waits in the queue: deferred, not bounced
    submit(relay, sender, alice, data)
    wait_for(lambda: "status=deferred" in mine(relay, alice), 15, "Postfix to defer the message")
    assert "dsn=4.2.2" in mine(relay, alice) and "status=bounced" not in mine(relay, alice)
    assert usage(home) == full
    # a day later the daily chatmail-expire trims the mailbox; Postfix's retry then delivers
    make_old(message_files(home), days=2)
    expire = chatmail_expire(relay)
    assert expire.returncode == 0, expire.stderr
    assert usage(home) <= 0.7 * LIMIT  # its trim target: 70% of max_mailbox_size
    flush = subprocess.run(
        ["postqueue", "-c", str(relay.layout.postfix_dir), "-f"], capture_output=True, text=True
    )
    assert flush.returncode == 0, flush.stderr
    wait_for(lambda: len(young(home)) == 1, 15, "the deferred message to arrive")
    assert "status=sent" in mine(relay, alice)


def test_chatmail_expire_on_a_mailbox_in_use_keeps_dovecot_consistent(relay):
    sender, alice = account(relay), account(relay)
    home = relay.cfg.mailboxes_dir / alice
    log_start = len(relay.log("dovecot.log"))
    for _ in range(3):
        lmtp_deliver(relay, sender, alice, message(sender, alice, 5_000))
    old = make_old(message_files(home), days=relay.cfg.delete_mails_after + 10)
    for _ in range(3):
        lmtp_deliver(relay, sender, alice, message(sender, alice, 5_000))

    selected, idling = imap_session(relay, alice), imap_session(relay, alice)
    try:
        typ, data = selected.select("INBOX")
        assert (typ, data) == ("OK", [b"6"])
        (uidvalidity,) = selected.response("UIDVALIDITY")[1]
        sizes = uid_sizes(selected)
        assert len(sizes) == 6
        typ, data = selected.uid("FETCH", "1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        idling.select("INBOX")
        idle = Idle(idling)

        expire = chatmail_expire(relay, "-v")
        assert expire.returncode == 0, expire.stderr
        listed = [line for line in expire.stdout.splitlines() if line.startswith("old\t")]
        # SELECT moved them from new/ to cur/ with a flags suffix: the same message, renamed
        assert {base(Path(line.split("\t")[1])) for line in listed} == {base(p) for p in old}
        assert len(message_files(home)) == 3

        # the idling client hears of the three removals (Dovecot notices within about 0.5 s)
        heard = idle.until(3, b"EXPUNGE")
        idle.done()
        # the selected one at its next command
        typ, _ = selected.noop()
        assert typ == "OK"
        _, expunged = selected.response("EXPUNGE")
        assert len(expunged) == 3, expunged
        assert sum(line.rstrip().endswith(b"EXPUNGE") for line in heard) == 3
        # the rest is there, with the same UIDs and sizes; the old ones were the first three
        first = sorted(sizes)
        assert uid_sizes(selected) == {uid: sizes[uid] for uid in first[3:]}
        typ, data = selected.uid("FETCH", "1:*", "(BODY.PEEK[])")
        bodies = [d[1] for d in data if isinstance(d, tuple)]
        assert typ == "OK" and len(bodies) == 3
        assert all(b"-----BEGIN PGP MESSAGE-----" in body for body in bodies)
        # new mail still reaches the session
        submit(relay, sender, alice, message(sender, alice, 5_000))
        wait_for(lambda: selected.noop() and selected.response("EXISTS")[1] != [None], 15, "EXISTS")
    finally:
        selected.logout()
        idling.logout()
    with imap_session(relay, alice) as again:
        typ, data = again.select("INBOX")
        assert (typ, data) == ("OK", [b"4"])
        assert again.response("UIDVALIDITY")[1] == [uidvalidity]
    new_lines = relay.log("dovecot.log")[log_start:]
    assert "Error" not in new_lines and "Warning" not in new_lines, new_lines
