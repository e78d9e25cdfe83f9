"""Bring a rendered relay up and down under Debian's supervisord, and say what runs.

``up`` prepares directories (sockets and mailboxes owned by the vmail user), renders the
configuration, starts a private ``supervisord`` (Dovecot, doveauth, lastlogin) or, if one runs
already, restarts it only if the configuration changed, then waits until IMAP answers.
``down`` stops everything ``up`` started; ``status`` lists it. Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from chatmaild.config import Config

from .render import Layout, RenderParams, render

SUPERVISORD = "supervisord"
SUPERVISORCTL = "supervisorctl"


class RelayError(RuntimeError):
    """The relay could not be brought up or down; the message says what to look at."""


def prepare(config: Config, layout: Layout, params: RenderParams) -> set[Path]:
    """Create the state directory tree and render into it; return the files that changed."""
    try:
        vmail = pwd.getpwnam(config.vmail_user)
    except KeyError:
        raise RelayError(f"unix user {config.vmail_user!r} does not exist (vmail_user)") from None
    for directory in (layout.state_dir, layout.log_dir, layout.dovecot_dir):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    layout.socket_dir.mkdir(exist_ok=True)
    os.chown(layout.socket_dir, vmail.pw_uid, vmail.pw_gid)
    layout.socket_dir.chmod(0o755)
    if not config.mailboxes_dir.exists():
        config.mailboxes_dir.mkdir(parents=True, mode=0o700)
        os.chown(config.mailboxes_dir, vmail.pw_uid, vmail.pw_gid)
    return set(render(config, layout, dataclasses.replace(params, vmail_uid=vmail.pw_uid)))


def _ctl(layout: Layout, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [SUPERVISORCTL, "-c", str(layout.supervisord_conf), *args],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise RelayError(f"supervisorctl {' '.join(args)} failed: {output}")
    return result


def supervisord_pid(layout: Layout) -> int | None:
    """The pid of this relay's supervisord if it runs, else None (a stale pidfile is removed).

    After a crash or reboot the pidfile may name an unrelated process that reuses the pid:
    only a supervisord started with this relay's configuration counts.
    """
    try:
        pid = int(layout.supervisord_pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        layout.supervisord_pid.unlink(missing_ok=True)
        return None
    ours = any(SUPERVISORD.encode() in arg for arg in cmdline[:2]) and (
        str(layout.supervisord_conf).encode() in cmdline
    )
    if not ours:
        layout.supervisord_pid.unlink(missing_ok=True)
        return None
    return pid


def up(config: Config, layout: Layout, params: RenderParams, timeout: float = 30) -> bool:
    """Start the relay, or bring a running one in line with its configuration.

    On a running relay only what changed restarts: ``supervisorctl update`` restarts a daemon
    whose program section changed (it carries digests of chatmail.ini and of the installed
    code), Dovecot re-reads its configuration on SIGHUP without dropping connections, and a
    program someone stopped is started again. True if supervisord was started.
    """
    if shutil.which(SUPERVISORD) is None:
        raise RelayError("supervisord not found: install Debian's supervisor package")
    prepare(config, layout, params)
    if supervisord_pid(layout) is None:
        result = subprocess.run(
            [SUPERVISORD, "-c", str(layout.supervisord_conf)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise RelayError(
                f"supervisord did not start: {(result.stderr or result.stdout).strip()}"
            )
        wait_ready(layout, params, timeout)
        return True
    # Dovecot reloads on SIGHUP and keeps its connections: cheap enough to do every time, so a
    # configuration rendered earlier (chatmail-relay render, an interrupted up) takes effect too
    _ctl(layout, "signal", "HUP", "dovecot", check=False)
    _ctl(layout, "update")
    _ctl(layout, "start", "all", check=False)  # "already started" is not an error here
    wait_ready(layout, params, timeout)
    return False


def wait_ready(layout: Layout, params: RenderParams, timeout: float) -> None:
    """Wait until every program is RUNNING, the sockets exist and Dovecot greets on IMAP."""
    deadline = time.monotonic() + timeout
    while True:
        sockets = layout.doveauth_socket.exists() and layout.lastlogin_socket.exists()
        if sockets and _imap_greets(params.listen, params.ports.imap) and _all_running(layout):
            return
        if time.monotonic() > deadline:
            raise RelayError(
                f"relay not ready after {timeout:.0f}s: see {layout.log_dir}/ and "
                f"'{SUPERVISORCTL} -c {layout.supervisord_conf} status'"
            )
        time.sleep(0.1)


def _all_running(layout: Layout) -> bool:
    lines = _ctl(layout, "status", check=False).stdout.splitlines()
    return bool(lines) and all(line.split()[1:2] == ["RUNNING"] for line in lines)


def _imap_greets(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2) as s:
        greets = s.recv(200).startswith(b"* OK")
        s.sendall(b"a LOGOUT\r\n")  # a clean goodbye: no "connection reset" in Dovecot's log
        s.recv(200)
        return greets
    return False


def down(layout: Layout, timeout: float = 30) -> bool:
    """Stop supervisord and everything under it; True if something was running."""
    pid = supervisord_pid(layout)
    if pid is None:
        return False
    if _ctl(layout, "shutdown", check=False).returncode != 0:
        os.kill(pid, signal.SIGTERM)  # its control socket is gone: stop it directly
    deadline = time.monotonic() + timeout
    while supervisord_pid(layout) is not None:
        if time.monotonic() > deadline:
            raise RelayError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    return True


def status(layout: Layout) -> str:
    """supervisorctl's status table, or a line saying nothing runs."""
    if supervisord_pid(layout) is None:
        return f"not running (state directory {layout.state_dir})"
    return _ctl(layout, "status", check=False).stdout.rstrip()
