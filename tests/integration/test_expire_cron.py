"""The daily expiry as cron runs it, on a whole relay.

The rendered cron line is run now, as Debian's cron would run it at its minute (its user, its
environment, its % handling: ``relays.run_as_cron``); no test waits for cron's tick. The run
leaves its summary in the log, and ``chatmail-relay status`` shows it.
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path

import pytest
from helpers_env import require, require_binary
from relays import chatmail_relay, cron_job, run_as_cron, start_relay, stop_relay

from relay import schedule

DAY = 86400


@pytest.fixture
def relay():
    require_binary("savelog")
    relay = start_relay()
    yield relay
    stop_relay(relay)


def old_message(relay, name: str) -> Path:
    """A message in the INBOX of ``name``@the relay's domain, delivered a day before expiry
    removes it, owned by vmail as Dovecot's are."""
    vmail = pwd.getpwnam(relay.cfg.vmail_user)
    home = relay.cfg.mailboxes_dir / f"{name}@{relay.cfg.mail_domain}"
    (home / "cur").mkdir(parents=True)
    (home / "password").write_text("{SHA512-CRYPT}$6$x$y\n")
    message = home / "cur" / "1700000000.M1P1.relay,S=5,W=5:2,S"
    message.write_text("Hi.\r\n")
    then = time.time() - (relay.cfg.delete_mails_after + 1) * DAY
    os.utime(message, (then, then))
    for path in (home, home / "cur", home / "password", message):
        os.chown(path, vmail.pw_uid, vmail.pw_gid)
    return message


def status(relay) -> str:
    args = ("--state-dir", str(relay.layout.state_dir), "--config", str(relay.cfg.path))
    result = chatmail_relay("status", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_cron_line_run_as_cron_would_expires_and_status_shows_it(relay):
    cron_file = relay.layout.schedule_dir / "chatmail-expire"
    user, _command, variables = cron_job(cron_file)
    assert user == relay.cfg.vmail_user
    assert variables == {"MAILTO": "", "PATH": "/usr/bin:/bin"}
    assert "expiry: no expiry run yet" in status(relay)
    log_dir = relay.layout.expire_log_dir
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o750  # lists accounts: vmail's only
    assert log_dir.stat().st_uid == pwd.getpwnam(user).pw_uid

    message = old_message(relay, "expired1")
    result = run_as_cron(cron_file)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")  # all of it is in the log: nothing to mail
    assert not message.exists()

    log = relay.layout.expire_log.read_text()
    assert log.startswith("chatmail-expire started ")
    assert f"old\t{message}" in log  # -v: each removed path, and why
    assert "chatmail-expire: 1 accounts scanned" in log
    assert log.endswith("chatmail-expire exit 0\n")
    shown = status(relay)
    assert "expiry: last run started " in shown
    assert "exit 0, done" in shown
    assert "  chatmail-expire: 1 accounts scanned" in shown
    assert "messages:  1 (1 old)" in shown
    assert f"(1 removed paths listed in {relay.layout.expire_log})" in shown


def test_each_run_starts_a_new_log_and_keeps_the_last_ones(relay):
    cron_file = relay.layout.schedule_dir / "chatmail-expire"
    assert run_as_cron(cron_file).returncode == 0
    old_message(relay, "expired2")
    assert run_as_cron(cron_file).returncode == 0
    log = relay.layout.expire_log
    assert log.read_text().count("chatmail-expire started ") == 1  # savelog rotated the first
    assert "messages:  1 (1 old)" in log.read_text()
    assert "messages:  0 (none)" in log.with_name("expire.log.0").read_text()
    assert "messages:  1 (1 old)" in status(relay)


def test_a_run_that_cannot_read_chatmail_ini_says_so_in_status(relay):
    cron_file = relay.layout.schedule_dir / "chatmail-expire"
    relay.cfg.path.chmod(0o600)  # root's only: chatmail-expire (vmail) cannot read it
    result = run_as_cron(cron_file)
    assert result.returncode == 0  # the shell's: the exit status is in the log
    shown = status(relay)
    assert "exit 2, nothing done: chatmail.ini or mailboxes_dir unusable" in shown
    assert "ERROR" in shown


def test_supervisord_runs_debians_cron_when_asked(relay):
    """What up does where no cron daemon runs: cron -f under the relay's supervisord."""
    require_binary("cron")
    ours = int(relay.layout.supervisord_pid.read_text())
    require(
        schedule.cron_daemon(ours, schedule.processes()) is None,
        "no other cron daemon runs on this machine (up would not start a second one)",
    )
    stop_relay(relay)
    relay = start_relay(run_cron=True)
    try:
        status_text = relay.ctl("status", "cron")
        assert "RUNNING" in status_text, status_text
        pid = int(status_text.split("pid ")[1].split(",")[0])
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "cron"
        ours = int(relay.layout.supervisord_pid.read_text())
        # up again would see it as the relay's own, not as another cron daemon
        assert schedule.cron_daemon(ours, schedule.processes()) is None
    finally:
        stop_relay(relay)
    assert not Path(f"/proc/{pid}").exists() or "cron" not in Path(f"/proc/{pid}/comm").read_text()
