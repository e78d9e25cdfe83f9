"""expire: the rules at their boundaries on generated maildir trees with set mtimes, dry runs,
races with Dovecot and logins, hostile names, the quota trim, and chatmail-expire's command line."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild import mailbox
from chatmaild.mailbox import DAY, PASSWORD_FILE, day_start, inactive
from expire import quota, sweep
from expire.__main__ import main
from expire.maildir import messages, name_size
from expire.rules import LARGE, Limits
from expire.sweep import Sweep, expire_mailboxes

NOW = 1_800_000_000.0  # a fixed clock: 2027-01-15 08:00 UTC
LIMITS = Limits(NOW, mails_days=20, large_days=7, inactive_days=90)


def account(root: Path, addr: str = "alice@example.org", login_days_ago: int = 0) -> Path:
    home = root / addr
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    password = home / PASSWORD_FILE
    password.write_text("{SHA512-CRYPT}$6$x")
    day = day_start(NOW) - login_days_ago * DAY
    os.utime(password, (day, day))
    return home


def message(home: Path, age_days: float, size: int = 100, where: str = "new", n: int = 1) -> Path:
    name = f"{int(NOW) - n}.M{n}P1.host,S={size},W={size + 10}" + (":2,S" if where == "cur" else "")
    path = home / where / name
    path.write_bytes(b"x" * min(size, 64))
    when = NOW - age_days * DAY
    os.utime(path, (when, when))
    return path


def run(root: Path, remove: bool = True, limits: Limits = LIMITS, **kwargs) -> sweep.Totals:
    return expire_mailboxes(str(root), limits, Sweep(remove), **kwargs)


# -- the rules at their boundaries -----------------------------------------------------------


@pytest.mark.parametrize(("age", "goes"), [(20 - 1 / 24, False), (20 + 1 / 24, True)])
def test_old_messages_go_after_delete_mails_after_days(tmp_path, age, goes):
    home = account(tmp_path)
    new, cur = message(home, age, where="new", n=1), message(home, age, where="cur", n=2)
    totals = run(tmp_path)
    assert (new.exists(), cur.exists()) == (not goes, not goes)
    assert totals.messages_removed == (2 if goes else 0)


@pytest.mark.parametrize(("age", "goes"), [(7 - 1 / 24, False), (7 + 1 / 24, True)])
def test_large_seen_messages_go_after_delete_large_after_days(tmp_path, age, goes):
    home = account(tmp_path)
    large_seen = message(home, age, size=LARGE + 1, where="cur", n=1)
    large_unseen = message(home, age, size=LARGE + 1, where="new", n=2)
    small_seen = message(home, age, size=LARGE, where="cur", n=3)
    run(tmp_path)
    assert large_seen.exists() != goes
    assert large_unseen.exists() and small_seen.exists()  # never seen, or not large: kept


@pytest.mark.parametrize(("days_ago", "goes"), [(90, False), (91, True)])
def test_accounts_unused_for_more_than_the_inactive_days_go_whole(tmp_path, days_ago, goes):
    home = account(tmp_path, login_days_ago=days_ago)
    message(home, 0)
    totals = run(tmp_path)
    assert home.exists() != goes
    assert totals.accounts_removed == (1 if goes else 0)


def test_an_account_used_today_is_kept_even_at_zero_inactive_days(tmp_path):
    home = account(tmp_path, login_days_ago=0)
    run(tmp_path, limits=Limits(NOW, 20, 7, inactive_days=0))
    assert home.exists()


def test_inactivity_is_counted_in_epoch_seconds_whatever_the_time_zone(monkeypatch):
    login = day_start(NOW) - 90 * DAY
    results = []
    for zone in ("UTC", "Pacific/Kiritimati", "America/Adak"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        results.append((inactive(login, NOW, 90), inactive(login - DAY, NOW, 90)))
    time.tzset()
    assert results == [(False, True)] * 3


@pytest.mark.parametrize(("age", "goes"), [(2 * DAY - 60, False), (2 * DAY + 60, True)])
def test_folders_without_password_go_after_a_grace_period(tmp_path, age, goes):
    half = tmp_path / "half@example.org"
    (half / "cur").mkdir(parents=True)
    os.utime(half, (NOW - age, NOW - age))
    run(tmp_path)
    assert half.exists() != goes


def test_a_folder_being_created_right_now_is_never_removed(tmp_path):
    creating = tmp_path / "new@example.org"
    creating.mkdir()
    os.utime(creating, (NOW, NOW))
    assert run(tmp_path).accounts_removed == 0
    assert creating.exists()


@pytest.mark.parametrize(("age", "goes"), [(DAY - 60, False), (DAY + 60, True)])
def test_tmp_leftovers_go_after_a_day(tmp_path, age, goes):
    home = account(tmp_path)
    leftover = home / "tmp" / "1.M1P1.host"
    leftover.write_text("half a delivery")
    os.utime(leftover, (NOW - age, NOW - age))
    run(tmp_path)
    assert leftover.exists() != goes


def test_dovecot_files_that_may_go_and_those_that_never_do(tmp_path):
    home = account(tmp_path)
    message(home, 30)  # goes: so the cache of this mailbox may go too
    old = NOW - 3 * DAY
    for name in (
        "dovecot.index.cache",
        "dovecot.index.log.2",
        "dovecot.index",
        "dovecot.index.log",
        "dovecot-uidlist",
        "dovecot-keywords",
        "maildirsize",
    ):
        (home / name).write_text("x")
        os.utime(home / name, (old, old))
    run(tmp_path)
    assert sorted(p.name for p in home.iterdir() if p.is_file()) == [
        "dovecot-keywords",
        "dovecot-uidlist",
        "dovecot.index",
        "dovecot.index.log",
        PASSWORD_FILE,
    ]


def test_the_cache_of_a_mailbox_nothing_was_removed_from_stays(tmp_path):
    home = account(tmp_path)
    cache = home / "dovecot.index.cache"
    cache.write_text("x")
    os.utime(cache, (NOW - 3 * DAY, NOW - 3 * DAY))
    run(tmp_path)
    assert cache.exists()


def test_other_maildir_folders_are_expired_too(tmp_path):
    home = account(tmp_path)
    for sub in ("cur", "new", "tmp"):
        (home / ".DeltaChat" / sub).mkdir(parents=True)
    old = message(home / ".DeltaChat", 30, where="cur")
    run(tmp_path)
    assert not old.exists()


# -- safety: dry runs, races, hostile names ----------------------------------------------------


def test_a_run_without_remove_deletes_nothing_but_counts_the_same(tmp_path):
    home = account(tmp_path)
    message(home, 30, n=1)
    message(home, 8, size=LARGE + 1, where="cur", n=2)
    account(tmp_path, "bob@example.org", login_days_ago=200)
    before = sorted(tmp_path.rglob("*"))
    dry = run(tmp_path, remove=False)
    assert sorted(tmp_path.rglob("*")) == before
    real = run(tmp_path, remove=True)
    assert (
        (dry.messages_removed, dry.accounts_removed, dry.bytes_removed)
        == (
            real.messages_removed,
            real.accounts_removed,
            real.bytes_removed,
        )
        == (2, 1, 100 + LARGE + 1)
    )


def test_a_message_dovecot_expunges_during_the_scan_is_not_counted(tmp_path, monkeypatch):
    home = account(tmp_path)
    gone, stays = message(home, 30, n=1), message(home, 30, n=2)
    real_messages = sweep.messages

    def racing(*args):
        for msg in real_messages(*args):
            if msg.path == str(gone):
                gone.unlink()  # Dovecot got there first
            yield msg

    monkeypatch.setattr(sweep, "messages", racing)
    totals = run(tmp_path)
    assert totals.messages_removed == 1 and totals.errors == 0
    assert not stays.exists()


def test_an_account_that_logs_in_during_the_run_is_kept(tmp_path, monkeypatch):
    home = account(tmp_path, login_days_ago=200)
    answers = iter([day_start(NOW) - 200 * DAY, day_start(NOW)])  # lastlogin wrote meanwhile
    monkeypatch.setattr(sweep, "last_login", lambda _home: next(answers))
    assert run(tmp_path).accounts_removed == 0
    assert home.exists()


def test_hostile_names_are_left_alone_and_symlinks_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "precious"
    precious.write_text("not the relay's")
    os.utime(precious, (NOW - 400 * DAY, NOW - 400 * DAY))
    root = tmp_path / "mail"
    home = account(root)
    (root / "link@example.org").symlink_to(outside)  # an address, but a symlink
    (root / "..evil@example.org").mkdir()  # no address
    os.mkdir(os.fsencode(root) + b"/\xff\xfe@example.org")  # not UTF-8
    (home / "cur" / "linked:2,S").symlink_to(precious)
    (home / ".Folder").mkdir()
    (home / ".Folder" / "cur").symlink_to(outside)
    (home / "new" / "dir-not-file").mkdir()
    for path in (root / "..evil@example.org", os.fsencode(root) + b"/\xff\xfe@example.org"):
        os.utime(path, (NOW - 400 * DAY, NOW - 400 * DAY))
    totals = run(root)
    assert precious.read_text() == "not the relay's"
    assert (root / "link@example.org").is_symlink()
    assert (root / "..evil@example.org").is_dir()
    assert os.path.isdir(os.fsencode(root) + b"/\xff\xfe@example.org")
    assert (home / "cur" / "linked:2,S").is_symlink()
    assert totals.accounts == 1 and totals.errors == 0


# -- the quota trim ------------------------------------------------------------------------------


def test_trim_removes_the_oldest_until_the_target_and_drops_the_quota_count(tmp_path):
    home = account(tmp_path)
    paths = [message(home, 10 - n, size=100_000, where="cur", n=n) for n in range(8)]
    (home / "maildirsize").write_text("1000000S\n800000 8\n")
    left = quota.trim(str(home), 500_000, NOW, Sweep(remove=True))
    assert left == 500_000
    assert [p.exists() for p in paths] == [False] * 3 + [True] * 5  # oldest first
    assert not (home / "maildirsize").exists()


def test_trim_never_removes_mail_of_the_last_24_hours(tmp_path):
    home = account(tmp_path)
    old = message(home, 2, size=100_000, n=1)
    fresh = [message(home, 0.5, size=100_000, n=n) for n in range(2, 6)]
    left = quota.trim(str(home), 100_000, NOW, Sweep(remove=True))
    assert not old.exists() and all(p.exists() for p in fresh)
    assert left == 400_000


def test_trim_leaves_a_mailbox_under_its_target_alone(tmp_path):
    home = account(tmp_path)
    paths = [message(home, 5, size=1000, n=n) for n in range(3)]
    (home / "maildirsize").write_text("x")
    assert quota.trim(str(home), 10_000, NOW, Sweep(remove=True)) == 3000
    assert all(p.exists() for p in paths) and (home / "maildirsize").exists()


def test_chatmail_expire_trims_only_mailboxes_over_the_quota_warning(tmp_path):
    full, fine = account(tmp_path, "full@example.org"), account(tmp_path, "fine@example.org")
    for n in range(10):
        message(full, 5, size=100_000, n=n)
        if n < 8:
            message(fine, 5, size=100_000, n=n)
    # quota 1,000,000: trimmed to 700,000 once over 900,000
    run(tmp_path, trim_to=700_000)
    assert sum(1 for _ in messages(str(full))) == 7
    assert sum(1 for _ in messages(str(fine))) == 8


def test_a_mailbox_a_large_message_no_longer_fits_in_is_trimmed_daily(tmp_path):
    """Quota 1,000,000 and messages of up to 300,000: at 800,000 the warning (900,000) has not
    fired, but the next large message would be deferred; the daily run makes room."""
    from expire.__main__ import trim_threshold

    home = account(tmp_path)
    for n in range(8):
        message(home, 5, size=100_000, n=n)
    assert trim_threshold(1_000_000, 30_000) == 900_000  # small messages: the warning's level
    run(tmp_path, trim_to=700_000, trim_over=trim_threshold(1_000_000, 300_000))
    assert sum(1 for _ in messages(str(home))) == 7


def test_quota_expire_command_line(tmp_path, capsys):
    home = account(tmp_path)
    for n in range(3):
        path = message(home, 0, size=600_000, n=n)
        month_ago = time.time() - (30 + n) * DAY  # main() reads the real clock
        os.utime(path, (month_ago, month_ago))
    assert quota.main(["1", str(home)]) == 0
    assert sum(1 for _ in messages(str(home))) == 1  # 1 MiB holds one of them
    assert capsys.readouterr().out == ""  # Dovecot's script service: stdout is closed
    assert quota.main(["1", str(tmp_path / "nobody@example.org")]) == 2


# -- the command line ------------------------------------------------------------------------------


def ini(tmp_path: Path, mailboxes: Path) -> Path:
    path = tmp_path / "chatmail.ini"
    path.write_text(f"[params]\nmail_domain = example.org\nmailboxes_dir = {mailboxes}\n")
    return path


def real_clock(home: Path, *messages_: Path, age_days: float = 30) -> None:
    """main() reads the real clock: a login today, messages ``age_days`` old."""
    now = time.time()
    os.utime(home / PASSWORD_FILE, (now, now))
    for path in messages_:
        os.utime(path, (now - age_days * DAY, now - age_days * DAY))


def test_chatmail_expire_prints_a_summary_and_lists_paths_with_v(tmp_path, capsys):
    root = tmp_path / "mail"
    home = account(root)
    old = message(home, 0)
    real_clock(home, old)
    assert main([str(ini(tmp_path, root)), "-v"]) == 0
    out = capsys.readouterr().out
    assert f"old\t{old}" in out and "1 accounts scanned" in out and "dry run" in out
    assert old.exists()
    assert main([str(ini(tmp_path, root)), "--remove"]) == 0
    assert not old.exists()
    assert len(capsys.readouterr().out.splitlines()) <= 10  # one screen


def test_chatmail_expire_exit_codes(tmp_path, capsys):
    assert main([str(tmp_path / "missing.ini")]) == 2
    assert main([str(ini(tmp_path, tmp_path / "no-such-dir"))]) == 2
    assert "cannot read mailboxes_dir" in capsys.readouterr().err


def test_chatmail_expire_exits_1_when_a_file_cannot_be_removed(tmp_path, monkeypatch):
    root = tmp_path / "mail"
    home = account(root)
    real_clock(home, message(home, 0))

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sweep.os, "unlink", refuse)
    assert main([str(ini(tmp_path, root)), "--remove"]) == 1


# -- parsers -------------------------------------------------------------------------------------


def test_sizes_come_from_the_name_or_the_file(tmp_path):
    assert name_size("1796187934.M41182P18672.vm,S=99107,W=100402:2,S") == 99107
    assert name_size("1796187934.M41182P18672.vm") is None
    home = account(tmp_path)
    (home / "new" / "plain").write_bytes(b"12345")
    assert [m.size for m in messages(str(home))] == [5]


@given(st.text())
def test_name_size_never_raises(name):
    size = name_size(name)
    assert size is None or size >= 0


def test_account_names_are_the_core_address_rule():
    assert mailbox.account_name("alice@example.org")
    assert mailbox.account_name("x@[127.0.0.1]")
    for name in ("..", ".tmp.x", "no-at", "a@b@c", "../x@example.org", "A@example.org"):
        assert not mailbox.account_name(name)
