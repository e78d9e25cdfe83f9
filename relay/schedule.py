"""The daily expiry on this machine: a cron file or a systemd timer, and what runs it.

``render`` writes the schedule (templates ``expire.*.j2``); ``up`` has it written into the
system's directory: ``/etc/systemd/system`` where PID 1 is systemd (and enables the timer),
else ``/etc/cron.d`` for Debian's cron. If no cron daemon runs there (a container, or a
machine whose init starts none), the relay's supervisord runs ``cron -f`` itself; never a
second cron beside one that runs (Debian's cron locks its pidfile, and a second one would
exit at once). ``down`` removes what ``up`` installed, as recorded in the state directory.
Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil

from chatmaild.config import Config
from chatmaild.mailbox import atomic_write

from .render import EXPIRE_TIMER_DELAY, SCHEDULE_TEMPLATES, Layout, RenderParams, expire_time
from .supervise import RelayError, supervisord_pid

SYSTEM_DIRS = {"cron": Path("/etc/cron.d"), "systemd": Path("/etc/systemd/system")}
CRON_NAMES = ("cron", "crond")  # Debian's cron; cronie and busybox call theirs crond
TIMER = "chatmail-expire.timer"
SCHEDULE_NAMES = {name for names in SCHEDULE_TEMPLATES.values() for name in names}


def pid1_scheduler(comm: Path = Path("/proc/1/comm")) -> str:
    """ "systemd" where PID 1 is systemd, else "cron"."""
    try:
        return "systemd" if comm.read_text().strip() == "systemd" else "cron"
    except OSError:
        return "cron"


def processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, name) of every process."""
    found = []
    for proc in psutil.process_iter(["pid", "ppid", "name"]):
        found.append((proc.info["pid"], proc.info["ppid"] or 0, proc.info["name"] or ""))
    return found


def cron_daemon(ours: int | None, procs: Iterable[tuple[int, int, str]]) -> int | None:
    """The pid of a cron daemon that the relay's supervisord (pid ``ours``) did not start, or
    None. A cron's children (the jobs it runs, named cron until they exec) do not count."""
    crons = {pid: ppid for pid, ppid, name in procs if name in CRON_NAMES}
    for pid, ppid in sorted(crons.items()):
        if ppid not in crons and (ours is None or ppid != ours):
            return pid
    return None


def for_install(params: RenderParams, layout: Layout) -> tuple[RenderParams, str]:
    """``params`` that write the schedule into the system's directory, with supervisord
    running cron if no other cron daemon runs; and what runs the schedule, in words."""
    directory = SYSTEM_DIRS[params.scheduler]
    if params.scheduler == "systemd":
        return dataclasses.replace(params, schedule_dir=directory), f"systemd ({TIMER})"
    pid = cron_daemon(supervisord_pid(layout), processes())
    if pid is not None:
        params = dataclasses.replace(params, schedule_dir=directory)
        return params, f"the cron daemon that runs here (pid {pid})"
    if not Path(params.cron_bin).exists():
        raise RelayError(f"no cron daemon runs, and {params.cron_bin} is not there: install cron")
    params = dataclasses.replace(params, schedule_dir=directory, run_cron=True)
    return params, "Debian's cron, run by the relay's supervisord (no cron daemon ran)"


def record(params: RenderParams, layout: Layout) -> None:
    """Before ``up`` installs the schedule: note its files, for ``down`` (even if ``up`` fails
    after writing them)."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    files = "".join(f"{path}\n" for path in params.schedule_files(layout))
    atomic_write(layout.schedule_installed, files.encode(), mode=0o644)


def enable(params: RenderParams) -> None:
    """After ``up`` installed a systemd timer: have systemd read it, and start it."""
    if params.scheduler == "systemd":
        _systemctl("daemon-reload")
        _systemctl("enable", "--now", TIMER)


def deactivate(layout: Layout) -> list[Path]:
    """Undo ``record`` and ``enable``: stop and disable the timer, remove the files; return
    those that were there."""
    try:
        recorded = layout.schedule_installed.read_text().split()
    except FileNotFoundError:
        return []
    files = [Path(line) for line in recorded if Path(line).name in SCHEDULE_NAMES]
    timer = any(path.name == TIMER for path in files)
    if timer:
        _systemctl("disable", "--now", TIMER)
    removed = []
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    if timer:
        _systemctl("daemon-reload")
    layout.schedule_installed.unlink()
    return removed


def _systemctl(*args: str) -> None:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise RelayError("systemctl not found, but PID 1 is systemd")
    result = subprocess.run(
        [systemctl, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise RelayError(
            f"systemctl {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
        )


def summary(config: Config, params: RenderParams, layout: Layout, runner: str | None) -> str:
    """What ``up`` says about the daily expiry: when, what runs it (``runner``; None: the
    schedule was only rendered), where its files and its log are."""
    hour, minute = expire_time(config.mail_domain)
    files = ", ".join(str(path) for path in params.schedule_files(layout))
    when = f"daily at {hour:02d}:{minute:02d}"
    if params.scheduler == "systemd":
        when += f" (up to {EXPIRE_TIMER_DELAY} min later)"
    if runner is None:
        return f"{when}, rendered into {files} only: nothing runs it"
    return f"{when} by {runner}: {files}; log {layout.expire_log}"
