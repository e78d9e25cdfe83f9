"""The daily expiry's last run, as its log tells it, for ``chatmail-relay status``.

Each run (the command in ``templates/expire.j2``) appends to the log a line
``chatmail-expire started <ISO 8601 time>``, then what ``chatmail-expire -v`` writes (a
``<what>\\t<path>`` line per removed file, log lines, the summary) and last
``chatmail-expire exit <status>``. With ``-v`` one run may list many files: the log is streamed
and the listing only counted. Pure apart from
reading the file; the time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

STARTED = b"chatmail-expire started "
EXITED = "chatmail-expire exit "
SUMMARY = "chatmail-expire: "  # the first line of chatmail-expire's summary
OTHER_LINES = 5  # log lines (errors) shown; the rest are in the log
STALE = 26 * 3600  # seconds: a day, the timer's delay and a long run
EXIT_MEANING = {
    0: "done",
    1: "done, but some files could not be removed",
    2: "nothing done: chatmail.ini or mailboxes_dir unusable",
}


@dataclass
class LastRun:
    started: str  # as the log has it
    exit_status: int | None = None  # None: no end line (still running, or interrupted)
    summary: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # log lines, the last OTHER_LINES
    others: int = 0  # how many there were
    listed: int = 0  # paths listed (-v)


def last_run(path: Path) -> LastRun | None:
    """The last run in the log at ``path``; None if there is no log or no run in it."""
    try:
        with open(path, "rb") as file:
            start = last_start(file)
            if start is None:
                return None
            file.seek(start)
            return parse_run(file)
    except FileNotFoundError:
        return None


def last_start(file: BinaryIO) -> int | None:
    """The offset of the last line starting with STARTED. One forward pass: savelog starts a
    new log for each run, so the file is one run long, and ``parse_run`` reads that run anyway."""
    start, offset = None, 0
    for line in file:
        if line.startswith(STARTED):
            start = offset
        offset += len(line)
    return start


def parse_run(lines: Iterable[bytes]) -> LastRun:
    """One run's lines, its start line first."""
    lines = iter(lines)
    run = LastRun(_text(next(lines))[len(STARTED) :])
    in_summary = False
    for raw in lines:
        line = _text(raw)
        if line.startswith(EXITED):
            status = line[len(EXITED) :]
            run.exit_status = int(status) if status.isdigit() else None
        elif line.startswith(SUMMARY):
            in_summary, run.summary = True, [line]
        elif in_summary and line.startswith("  "):
            run.summary.append(line)
        elif "\t" in line:
            run.listed += 1
        else:
            in_summary = False
            run.others += 1
            run.other = [*run.other[-(OTHER_LINES - 1) :], line]
    return run


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace").rstrip("\n")


def describe(run: LastRun | None, now: float, log: Path) -> str:
    """Lines for ``status``: when the last run started, how it ended, its summary."""
    if run is None:
        return f"expiry: no expiry run yet (log {log})"
    if run.exit_status is None:
        ended = "no end recorded: still running, or interrupted"
    else:
        ended = f"exit {run.exit_status}, {EXIT_MEANING.get(run.exit_status, 'failed')}"
    lines = [f"expiry: last run started {run.started}, {ended}"]
    if _age(run.started, now) > STALE:
        lines.append("  that is more than a day ago: does cron (or the timer) run?")
    lines += [f"  {line}" for line in run.summary]
    if run.others > len(run.other):
        lines.append(f"  ... {run.others - len(run.other)} more log lines in {log}")
    lines += [f"  {line}" for line in run.other]
    if run.listed:
        lines.append(f"  ({run.listed} removed paths listed in {log})")
    return "\n".join(lines)


def _age(started: str, now: float) -> float:
    try:
        return now - datetime.fromisoformat(started).timestamp()
    except ValueError:
        return 0.0
