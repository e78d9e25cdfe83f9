"""status's view of the daily expiry: the last run in its log, read from the end."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from expire.__main__ import listing, summary
from expire.sweep import Totals
from relay.expirelog import describe, last_run

NOW = datetime.fromisoformat("2025-03-02T04:00:00+00:00").timestamp()


def a_run(started: str, exit_status: int | None = 0, listed: int = 0, errors=()) -> str:
    """The lines one run appends, made by chatmail-expire's own printing functions."""
    totals = Totals(accounts=3, messages_removed=listed, reasons={"old": listed} if listed else {})
    lines = [f"chatmail-expire started {started}"]
    lines += [f"message\t/mail/a@x/cur/{i}" for i in range(listed)]
    lines += list(errors)
    if exit_status != 2:
        lines.append(summary(totals, True, 0.25))
    if exit_status is not None:
        lines.append(f"chatmail-expire exit {exit_status}")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "expire.log"
    path.write_text(text)
    return path


def test_no_log_means_no_run_yet(tmp_path):
    log = tmp_path / "expire.log"
    assert last_run(log) is None
    assert describe(None, NOW, log).startswith("expiry: no expiry run yet")


def test_the_last_of_several_runs_with_its_summary(tmp_path, capsys):
    listing("message", "/mail/a@x/cur/1")  # -v's line format, as the listing below
    assert capsys.readouterr().out == "message\t/mail/a@x/cur/1\n"
    log = write(
        tmp_path,
        a_run("2025-02-28T03:20:01+00:00", listed=7) + a_run("2025-03-02T03:20:01+00:00", listed=2),
    )
    run = last_run(log)
    assert run.started == "2025-03-02T03:20:01+00:00"
    assert run.exit_status == 0
    assert run.listed == 2
    assert run.summary[0].startswith("chatmail-expire: 3 accounts scanned in 0.2 s; removed:")
    assert len(run.summary) == 5
    text = describe(run, NOW, log)
    assert (
        text.splitlines()[0] == "expiry: last run started 2025-03-02T03:20:01+00:00, exit 0, done"
    )
    assert "  chatmail-expire: 3 accounts scanned" in text
    assert "messages:  2 (2 old)" in text
    assert f"(2 removed paths listed in {log})" in text
    assert "more than a day ago" not in text


def test_a_run_that_could_not_start_shows_why(tmp_path):
    error = "2025-03-02 03:20:01 chatmail-expire ERROR cannot read mailboxes_dir /m: No such file"
    log = write(tmp_path, a_run("2025-03-02T03:20:01+00:00", exit_status=2, errors=[error]))
    text = describe(last_run(log), NOW, log)
    assert "exit 2, nothing done: chatmail.ini or mailboxes_dir unusable" in text
    assert error in text


def test_only_the_last_log_lines_are_shown(tmp_path):
    errors = [f"chatmail-expire ERROR cannot remove /m/{i}" for i in range(12)]
    log = write(tmp_path, a_run("2025-03-02T03:20:01+00:00", exit_status=1, errors=errors))
    text = describe(last_run(log), NOW, log)
    assert "some files could not be removed" in text
    assert f"... 7 more log lines in {log}" in text
    assert "/m/11" in text and "/m/7" in text and "/m/6" not in text


def test_a_run_without_an_end_line_is_running_or_was_interrupted(tmp_path):
    log = write(tmp_path, a_run("2025-03-02T03:20:01+00:00", exit_status=None, listed=3))
    run = last_run(log)
    assert run.exit_status is None
    assert "no end recorded: still running, or interrupted" in describe(run, NOW, log)


def test_a_last_run_days_ago_is_pointed_out(tmp_path):
    log = write(tmp_path, a_run("2025-02-27T03:20:01+00:00"))
    assert "more than a day ago" in describe(last_run(log), NOW, log)


def test_a_log_without_a_start_line_has_no_run(tmp_path):
    assert last_run(write(tmp_path, "savelog: could not rotate\n")) is None
    assert last_run(write(tmp_path, "")) is None


def test_the_last_of_several_runs_is_found(tmp_path):
    text = a_run("2025-03-01T03:20:01+00:00", listed=5) + a_run(
        "2025-03-02T03:20:01+00:00", listed=3
    )
    log = write(tmp_path, text)
    run = last_run(log)
    assert run.started == "2025-03-02T03:20:01+00:00"
    assert run.listed == 3
    log = write(tmp_path, a_run("2025-03-01T03:20:01+00:00", listed=40))  # one, at offset 0
    assert last_run(log).listed == 40
