"""Start a real daemon process (from this source tree) on a temporary socket and mailboxes dir.

A daemon runs as the test process's user, or as another unix user (``vmail``, as in
production): then its temp dir, config and log are handed to that user, and the directories
above the temp dir are opened for it to pass through until ``restore_modes()``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("chatmaild", "doveauth", "filtermail", "metadata")


@functools.cache
def readable_source() -> Path:
    """A copy of this tree's packages that every user can read, for daemons run as another user.

    The checkout may sit where only its owner can enter (``mktemp -d`` makes 0700 directories),
    so a daemon running as vmail imports this copy, made once per test session.
    """
    root = Path(tempfile.mkdtemp(prefix="chatmaild-src-"))
    atexit.register(shutil.rmtree, root, True)
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


# directories given o+x so a daemon's user can reach its temp dir: path -> mode before
_opened: dict[Path, int] = {}


@dataclass
class Daemon:
    proc: subprocess.Popen
    socket: Path
    mailboxes: Path
    nocreate: Path
    log: Path
    user: str | None = None  # None: the test process's own user

    def log_text(self) -> str:
        return self.log.read_text()

    def give(self, path: Path) -> Path:
        """Hand ``path`` and everything below it to the daemon's user, as if it had made them."""
        if self.user is not None:
            _chown_tree(path, pwd.getpwnam(self.user))
        return path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def write_ini(tmp: Path, extra: str = "", mailboxes: Path | None = None) -> Path:
    """A chatmail.ini for example.org in ``tmp``; ``extra`` lines ("key = value") override."""
    params = {
        "mail_domain": "example.org",
        "mailboxes_dir": str(mailboxes or tmp / "mail"),
        "nocreate_file": str(tmp / "nocreate"),
        "max_load_1m": "1000",
        "min_available_memory": "1M",
        "min_free_disk_space": "1M",
        # push: the queue in tmp, and a gateway on loopback where nothing listens (tests that
        # need one start their own and override the URL)
        "notification_queue_dir": str(tmp / "notifications"),
        "notification_url": "http://127.0.0.1:9/notify",
        "turn_socket_path": str(tmp / "turn.socket"),
        "app_versions_path": str(tmp / "appversions"),
    }
    for line in extra.splitlines():
        name, _, value = line.partition("=")
        params[name.strip()] = value.strip()
    ini = tmp / "chatmail.ini"
    ini.write_text("[params]\n" + "".join(f"{k} = {v}\n" for k, v in params.items()))
    return ini


@functools.cache
def user_problem(user: str) -> str | None:
    """Why daemons cannot be started as ``user`` from this tree, or None if they can."""
    if os.geteuid() != 0:
        return f"needs root to start daemons as {user}"
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"no unix user {user} (relay.sh creates it)"
    # the venv may hold an installed copy: the daemons must come from this tree, not from it
    source = readable_source()
    probe = subprocess.run(
        [sys.executable, "-c", "import chatmaild, doveauth; print(chatmaild.__file__)"],
        env={"PYTHONPATH": str(source), "PATH": os.environ.get("PATH", "")},
        cwd="/",
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or not probe.stdout.startswith(f"{source}/"):
        return f"{user} cannot run {sys.executable} (the venv must be readable by {user})"
    return None


def _can_traverse(st: os.stat_result, pw: pwd.struct_passwd) -> bool:
    if st.st_uid == pw.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == pw.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _closed_above(path: Path, pw: pwd.struct_passwd) -> list[Path]:
    return [parent for parent in path.parents if not _can_traverse(parent.stat(), pw)]


def _open_path_to(path: Path, pw: pwd.struct_passwd) -> None:
    # pytest keeps its temp dirs 0700: let the user through (search only, no listing). Each
    # pytest session of the same user starting meanwhile closes pytest-of-<user> again; this
    # re-opens it for the next daemon, but one already running as vmail loses its way.
    for parent in _closed_above(path, pw):
        mode = stat.S_IMODE(parent.stat().st_mode)
        _opened.setdefault(parent, mode)
        os.chmod(parent, mode | stat.S_IXOTH)


def _why_not_started(module: str, tmp: Path, user: str | None) -> str:
    closed = _closed_above(tmp, pwd.getpwnam(user)) if user is not None else []
    if closed:  # see _open_path_to
        return (
            f"{module} did not start: {user} cannot pass {closed[0]} (closed again by another "
            f"pytest session starting meanwhile? run again)"
        )
    return f"{module} did not start"


def restore_modes() -> None:
    """Close again what ``start_daemon`` opened for another user."""
    while _opened:
        path, mode = _opened.popitem()
        with contextlib.suppress(FileNotFoundError):  # pytest may have removed it
            os.chmod(path, mode)


def _chown_tree(path: Path, pw: pwd.struct_passwd) -> None:
    os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _chown_tree(child, pw)


def _owner_of(path: Path) -> str | None:
    """The user owning ``path`` or its nearest existing parent; None if that is us."""
    while not path.exists():
        path = path.parent
    uid = path.stat().st_uid
    return None if uid == os.geteuid() else pwd.getpwuid(uid).pw_name


def _as_user(user: str, tmp: Path, env: dict[str, str]) -> dict[str, object]:
    """Hand ``tmp`` and what is in it to ``user``; the Popen arguments that run as ``user``."""
    pw = pwd.getpwnam(user)
    _chown_tree(tmp, pw)
    _open_path_to(tmp, pw)
    env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user, PYTHONPATH=str(readable_source()))
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_daemon(
    module: str,
    tmp: Path,
    extra_ini: str = "",
    *args: str,
    mailboxes: Path | None = None,
    user: str | None = None,
) -> Daemon:
    """Run ``python -m module SOCKET INI *args`` with its socket, config and log in ``tmp``.

    Without ``--restart-grace`` in ``args`` the daemon gets 0: no handoff on stop.

    ``user`` runs it as that unix user; by default a daemon given existing ``mailboxes`` runs
    as their owner (a second daemon on them runs as the first does), else as this process.
    """
    if user is None and mailboxes is not None:
        user = _owner_of(mailboxes)
    if "--restart-grace" not in args:  # no socket keeper lingering after each test
        args = (*args, "--restart-grace", "0")
    tmp.mkdir(exist_ok=True)
    ini = write_ini(tmp, extra_ini, mailboxes)
    sock = tmp / f"{module}.socket"
    log = tmp / f"{module}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as logfp:
        switch = _as_user(user, tmp, env) if user is not None else {}
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(sock), str(ini), *args],
            stdout=logfp,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            **switch,  # type: ignore[arg-type]
        )
    deadline = time.monotonic() + 20
    while not _accepts(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{_why_not_started(module, tmp, user)}: {log.read_text()}")
        time.sleep(0.02)
    return Daemon(proc, sock, mailboxes or tmp / "mail", tmp / "nocreate", log, user)
