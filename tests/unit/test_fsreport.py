"""chatmail-fsreport: buckets at expiry's bounds, generated Maildir trees, privacy of addresses,
hostile entries, exit codes, and the pure counting's sums (property test)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild.mailbox import DAY, day_start, inactive
from expire import fsreport
from expire.maildir import Message, messages
from expire.rules import Limits, message_reason
from expire.tally import MIB, Account, Aggregate, Scales, aggregate

NOW = 1_800_000_000.5  # an instant in the middle of a UTC day
QUOTA = 500 * MIB
SCALES = Scales(NOW, QUOTA, mails_days=20, inactive_days=90)


def counts(buckets: list[dict]) -> list[int]:
    return [b["count"] for b in buckets]


def msg(size: int = 100, age: float = 0.0, seen: bool = False) -> Message:
    return Message("p", size, NOW - age, seen)


def make_account(
    root: Path, addr: str, login_age: float | None, messages=(), now: float = NOW
) -> Path:
    """A Maildir account under ``root``; ``messages``: (folder, kind, size, age in seconds)."""
    home = root / addr
    for folder in ("", ".Sent"):
        for sub in ("cur", "new", "tmp"):
            (home / folder / sub).mkdir(parents=True, exist_ok=True)
    if login_age is not None:
        (home / "password").write_text("{SHA512-CRYPT}$6$x")
        os.utime(home / "password", (now - login_age, now - login_age))
    for i, (folder, kind, size, age) in enumerate(messages):
        name = f"1700000000.M{i}P7.host,S={size},W={size + 3}" + (":2,S" if kind == "cur" else "")
        path = home / folder / kind / name
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))
    return home


def write_config(tmp_path: Path, mailboxes: Path) -> str:
    ini = tmp_path / "chatmail.ini"
    ini.write_text(f"[params]\nmail_domain = example.org\nmailboxes_dir = {mailboxes}\n")
    return str(ini)


def run_json(capsys, *argv: str) -> dict:
    assert fsreport.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- bucket boundaries -----------------------------------------------------------------------


def test_message_ages_split_exactly_where_expiry_deletes(tmp_path):
    ages = [0, DAY, DAY + 1, 7 * DAY, 7 * DAY + 1, 20 * DAY, 20 * DAY + 1, 400 * DAY]
    home = make_account(tmp_path, "a@example.org", 0, [("", "new", 10, a) for a in ages])
    report = aggregate(fsreport.Walk(str(tmp_path)), SCALES)
    by_age = report["messages"]["by_age"]
    assert [b["label"] for b in by_age] == ["<=1 d", "<=7 d", "<=20 d", ">20 d"]
    assert [b["max_days"] for b in by_age] == [1, 7, 20, None]
    assert counts(by_age) == [2, 2, 2, 2]
    limits = Limits(NOW, 20, 7, 90)
    old = [m for m in messages(str(home)) if message_reason(m, limits) == "old"]
    assert len(old) == by_age[-1]["count"]


def test_message_sizes_split_at_expirys_large(tmp_path):
    sizes = [0, 10_000, 10_001, 200_000, 200_001, 1_000_000, 1_000_001]
    report = aggregate([Account("a@x.org", None, [msg(s) for s in sizes])], SCALES)
    by_size = report["messages"]["by_size"]
    assert [b["label"] for b in by_size] == ["<=10 kB", "<=200 kB", "<=1 MB", ">1 MB"]
    assert counts(by_size) == [2, 2, 2, 1]
    assert [b["bytes"] for b in by_size] == [10_000, 210_001, 1_200_001, 1_000_001]


def test_logins_in_whole_days_and_older_is_exactly_inactive(tmp_path):
    login_ages = {"a": 0, "b": DAY, "c": 2 * DAY, "d": 30 * DAY, "e": 90 * DAY, "f": 91 * DAY}
    for name, age in login_ages.items():
        make_account(tmp_path, f"{name}@example.org", age)
    make_account(tmp_path, "g@example.org", None, [("", "new", 7, 0)])
    report = aggregate(fsreport.Walk(str(tmp_path)), SCALES)["accounts"]
    labels = [b["label"] for b in report["by_last_login"]]
    assert labels == ["today", "<=1 d", "<=7 d", "<=30 d", "<=90 d", ">90 d"]
    assert counts(report["by_last_login"]) == [1, 1, 1, 1, 1, 1]
    assert report["no_password"] == {"count": 1, "bytes": 7}
    assert report["count"] == 7
    assert inactive(day_start(NOW - 91 * DAY), NOW, 90)
    assert not inactive(day_start(NOW - 90 * DAY), NOW, 90)


def test_mailbox_sizes_below_each_bound_and_at_quota_full():
    totals = [0, 1, MIB - 1, MIB, 10 * MIB, QUOTA - 1, QUOTA, QUOTA + 1]
    accounts = [Account(f"u{i}@x.org", 0, [msg(t)] if t else []) for i, t in enumerate(totals)]
    box = aggregate(accounts, SCALES)["mailboxes"]
    labels = [b["label"] for b in box["by_size"]]
    assert labels == ["empty", "<1 MiB", "<10 MiB", "<100 MiB", "<500 MiB", ">=500 MiB"]
    assert [b["below_bytes"] for b in box["by_size"]] == [1, MIB, 10 * MIB, 100 * MIB, QUOTA, None]
    assert counts(box["by_size"]) == [1, 2, 1, 1, 1, 2]
    assert box["bytes"] == sum(totals)
    assert box["mean_bytes"] == sum(totals) // len(totals)
    assert box["largest_bytes"] == QUOTA + 1


def test_settings_below_the_usual_steps_stay_the_last_bounds():
    scales = Scales(NOW, 5 * MIB, mails_days=3, inactive_days=1)
    report = aggregate([], scales)
    assert [b["label"] for b in report["mailboxes"]["by_size"]] == [
        "empty",
        "<1 MiB",
        "<5 MiB",
        ">=5 MiB",
    ]
    assert [b["label"] for b in report["messages"]["by_age"]] == ["<=1 d", "<=3 d", ">3 d"]
    assert [b["label"] for b in report["accounts"]["by_last_login"]] == ["today", "<=1 d", ">1 d"]
    assert report["mailboxes"]["mean_bytes"] == 0


def test_new_and_cur_counted_in_every_folder(tmp_path):
    make_account(
        tmp_path,
        "a@example.org",
        0,
        [("", "new", 1, 0), ("", "cur", 2, 0), (".Sent", "cur", 3, 0), (".Sent", "new", 4, 0)],
    )
    (tmp_path / "a@example.org" / "tmp" / "1.M1P1.host,S=99").write_bytes(b"x")  # in delivery
    report = aggregate(fsreport.Walk(str(tmp_path)), SCALES)["messages"]
    assert (report["count"], report["new"], report["cur"], report["bytes"]) == (4, 2, 2, 10)


def test_largest_heap_stays_bounded_and_holds_no_address_unless_asked():
    accounts = (Account(f"u{i}@x.org", 0, [msg(i)]) for i in range(2000))
    agg = Aggregate(SCALES, top=3)
    for account in accounts:
        agg.add(account)
    assert len(agg.largest) == 3
    assert all(addr == "" for _, addr in agg.largest)
    assert agg.report()["mailboxes"]["largest"] == [
        {"bytes": 1999},
        {"bytes": 1998},
        {"bytes": 1997},
    ]


# -- the command -----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> tuple[str, Path]:
    now = time.time()
    mail = tmp_path / "mail"
    make_account(mail, "big@example.org", 0, [("", "cur", 3000, 3 * DAY)], now=now)
    make_account(mail, "mid@example.org", 2 * DAY, [("", "new", 2000, 0)], now=now)
    make_account(mail, "small@example.org", 100 * DAY, [(".Sent", "cur", 1000, 30 * DAY)], now=now)
    make_account(mail, "new@example.org", None, now=now)
    return write_config(tmp_path, mail), mail


def test_json_round_trip_has_the_documented_keys(store, capsys):
    report = run_json(capsys, store[0])
    assert list(report) == ["now", "unreadable", "settings", "accounts", "mailboxes", "messages"]
    assert report["settings"] == {
        "quota_bytes": QUOTA,
        "delete_mails_after": 20,
        "delete_inactive_users_after": 90,
    }
    assert list(report["accounts"]) == ["count", "by_last_login", "no_password"]
    assert list(report["mailboxes"]) == [
        "bytes",
        "mean_bytes",
        "largest_bytes",
        "by_size",
        "largest",
    ]
    assert list(report["messages"]) == ["count", "bytes", "new", "cur", "by_age", "by_size"]
    assert counts(report["accounts"]["by_last_login"]) == [1, 0, 1, 0, 0, 1]
    assert counts(report["messages"]["by_age"]) == [1, 1, 0, 1]
    assert (report["accounts"]["count"], report["messages"]["bytes"]) == (4, 6000)
    assert report["unreadable"] == 0


def test_addresses_absent_without_the_flag(store, capsys):
    assert fsreport.main([store[0]]) == 0
    text = capsys.readouterr().out
    report = run_json(capsys, store[0])
    assert "@" not in text and "@" not in json.dumps(report)
    assert report["mailboxes"]["largest"] == [
        {"bytes": 3000},
        {"bytes": 2000},
        {"bytes": 1000},
        {"bytes": 0},
    ]


def test_addresses_named_with_the_flag_largest_first(store, capsys):
    report = run_json(capsys, store[0], "--addresses", "2")
    assert report["mailboxes"]["largest"] == [
        {"bytes": 3000, "address": "big@example.org"},
        {"bytes": 2000, "address": "mid@example.org"},
    ]
    assert fsreport.main([store[0], "--addresses", "1"]) == 0
    text = capsys.readouterr().out
    assert "big@example.org" in text and "mid@example.org" not in text


@pytest.mark.parametrize("value", ["0", "-1", "1001", "x"])
def test_addresses_needs_a_sane_count(store, value):
    with pytest.raises(SystemExit) as exc:
        fsreport.main([store[0], "--addresses", value])
    assert exc.value.code == 2


def test_text_fits_one_screen(store, capsys):
    assert fsreport.main([store[0]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 18 and max(map(len, lines)) <= 80
    assert lines[0].endswith("4 accounts, 3 messages, 5.9 KiB")
    assert "  no password file (a sign-up under way or failed): 1, holding 0 B" in lines
    assert "largest mailboxes: 2.9 KiB, 2 KiB, 1000 B, 0 B" in lines


def test_text_of_a_huge_store_still_fits_80_columns():
    # ten million accounts, a billion messages per bucket, a petabyte per bucket
    report = aggregate([], Scales(NOW, 999 * 2**30, 20, 90), top=5)
    most = {"accounts": 9_999_999, "mailboxes": 9_999_999, "messages": 999_999_999}
    for part, count in most.items():
        for key in ("by_last_login", "by_size", "by_age"):
            for bucket in report[part].get(key, []):
                bucket.update(count=count, bytes=1023 * 2**40 - 1)
    report["mailboxes"]["largest"] = [{"bytes": 999 * 2**30}] * 5
    report["unreadable"] = 99_999_999
    lines = fsreport.render(report).splitlines()
    assert len(lines) == 18 and max(map(len, lines)) <= 80, "\n".join(lines)


def test_sizes_are_short_binary_units():
    assert [fsreport.human(n) for n in (0, 1023, 1536, 100 * MIB, QUOTA, 1023 * 2**40 - 1)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "100 MiB",
        "500 MiB",
        "1023 TiB",
    ]


def test_hostile_entries_are_skipped(store, tmp_path, capsys):
    ini, mail = store
    outside = make_account(tmp_path / "outside", "x@example.org", 0, [("", "new", 50_000, 0)])
    (mail / "link@example.org").symlink_to(outside)
    make_account(mail, "not-an-address", 0, [("", "new", 60_000, 0)])
    make_account(mail, "Upper@example.org", 0, [("", "new", 60_000, 0)])
    undecodable = os.path.join(bytes(mail), b"\xff\xfe@example.org", b"new")
    os.makedirs(undecodable)
    os.close(os.open(os.path.join(undecodable, b"1.M1P1.h,S=70000"), os.O_CREAT | os.O_WRONLY))
    (mail / "file@example.org").write_text("not a directory")
    big = mail / "big@example.org"
    (big / ".Evil").symlink_to(outside)  # a symlinked folder
    (big / "new" / "1.M9P9.h,S=80000").symlink_to(outside / "new" / os.listdir(outside / "new")[0])
    report = run_json(capsys, ini)
    assert report["accounts"]["count"] == 4
    assert (report["messages"]["count"], report["messages"]["bytes"]) == (3, 6000)
    assert report["unreadable"] == 0


def test_unreadable_mailbox_is_counted_and_the_report_goes_on(store, monkeypatch, capsys):
    real = fsreport.messages

    def refusing(home):
        yield from real(home)
        if home.endswith("big@example.org"):
            raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fsreport, "messages", refusing)
    report = run_json(capsys, store[0])
    assert report["unreadable"] == 1
    assert (report["accounts"]["count"], report["messages"]["count"]) == (4, 3)


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.write_text("a file")])
def test_unusable_mailboxes_dir_exits_2(tmp_path, capsys, make):
    mail = tmp_path / "mail"
    make(mail)
    assert fsreport.main([write_config(tmp_path, mail)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot read mailboxes_dir" in captured.err and str(mail) in captured.err


def test_unreadable_config_exits_2(tmp_path, capsys):
    assert fsreport.main([str(tmp_path / "missing.ini")]) == 2
    assert "cannot read" in capsys.readouterr().err


# -- the counting, for any input -------------------------------------------------------------

messages_st = st.lists(
    st.builds(
        msg,
        size=st.integers(0, 2**40),
        age=st.floats(-1e9, 1e10, allow_nan=False),
        seen=st.booleans(),
    ),
    max_size=8,
)
accounts_st = st.lists(
    st.builds(
        Account,
        address=st.text(max_size=5),
        last_login=st.none() | st.integers(-(2**40), 2**40),
        messages=messages_st,
    ),
    max_size=12,
)


@given(
    accounts=accounts_st,
    quota=st.integers(-5, 2**42),
    mails_days=st.integers(-5, 10_000),
    inactive_days=st.integers(-5, 10_000),
    top=st.integers(0, 6),
    addresses=st.booleans(),
)
def test_counts_add_up_for_any_input(accounts, quota, mails_days, inactive_days, top, addresses):
    scales = Scales(NOW, quota, mails_days, inactive_days)
    report = aggregate(accounts, scales, top, addresses)
    acc, box, msgs = report["accounts"], report["mailboxes"], report["messages"]
    sizes = sorted((sum(m.size for m in a.messages) for a in accounts), reverse=True)
    n_msgs = sum(len(a.messages) for a in accounts)
    assert acc["count"] == len(accounts) == sum(counts(box["by_size"]))
    assert sum(counts(acc["by_last_login"])) + acc["no_password"]["count"] == len(accounts)
    assert msgs["count"] == msgs["new"] + msgs["cur"] == n_msgs
    assert sum(counts(msgs["by_age"])) == sum(counts(msgs["by_size"])) == n_msgs
    for buckets in (box["by_size"], msgs["by_age"], msgs["by_size"]):
        assert sum(b["bytes"] for b in buckets) == box["bytes"] == msgs["bytes"] == sum(sizes)
    assert [row["bytes"] for row in box["largest"]] == sizes[:top]
    assert all(("address" in row) == addresses for row in box["largest"])
    assert box["largest_bytes"] == (sizes[0] if sizes else 0)
    assert fsreport.render(report)
