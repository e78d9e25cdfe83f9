"""Bring a rendered relay up and down under Debian's supervisord, and say what runs.

``up`` prepares directories (sockets, mailboxes and the expiry's log owned by the vmail user),
renders the configuration (with the daily expiry's schedule, see ``schedule``), starts a
private ``supervisord`` (Dovecot, Postfix, the daemons, cron if ``schedule`` says so) or, if one
runs already, restarts only what changed, then waits until IMAP answers. ``down`` stops everything
``up`` started; ``status`` lists it and changes nothing. supervisord is driven through its
XML-RPC interface on the relay's control socket, never by parsing ``supervisorctl``'s text.
Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import imaplib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
import xml.parsers.expat
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import Faults, SupervisorTransport

from chatmaild.config import Config

from . import ports, tls
from .errors import RelayError
from .reload import RELOADABLE, mark_applied, reload_changed
from .render import Layout, RenderParams, render

SUPERVISORD = "supervisord"
SUPERVISORCTL = "supervisorctl"
SUCCESS = Faults.SUCCESS
log = logging.getLogger(__name__)
# What talking to supervisord over its socket can raise: it is not there, it answered with an
# error, or it went away in the middle of an answer.
RPC_ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException, xml.parsers.expat.ExpatError)


def prepare(config: Config, layout: Layout, params: RenderParams) -> set[Path]:
    """Create the state directory tree and render into it; return the files that changed."""
    try:
        vmail = pwd.getpwnam(config.vmail_user)
    except KeyError:
        raise RelayError(f"unix user {config.vmail_user!r} does not exist (vmail_user)") from None
    for directory in (
        layout.state_dir,
        layout.log_dir,
        layout.dovecot_dir,
        layout.postfix_dir,
        layout.postfix_queue,
    ):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    try:
        postfix = pwd.getpwnam("postfix")
    except KeyError:
        raise RelayError("unix user 'postfix' does not exist: install Debian's postfix") from None
    layout.postfix_data.mkdir(exist_ok=True)
    os.chown(layout.postfix_data, postfix.pw_uid, postfix.pw_gid)
    layout.postfix_data.chmod(0o700)
    tls.ensure_certificate(config, layout, params.listen)
    layout.socket_dir.mkdir(exist_ok=True)
    os.chown(layout.socket_dir, vmail.pw_uid, vmail.pw_gid)
    layout.socket_dir.chmod(0o755)
    for directory in (config.mailboxes_dir, config.notification_queue_dir):
        if not directory.exists():  # the daemons (vmail) write there
            directory.mkdir(parents=True, mode=0o700)
            os.chown(directory, vmail.pw_uid, vmail.pw_gid)
    # the daily expiry runs as vmail, writes its log there and rotates it (savelog); the log
    # lists accounts' files: not for other local users
    layout.expire_log_dir.mkdir(exist_ok=True)
    os.chown(layout.expire_log_dir, vmail.pw_uid, vmail.pw_gid)
    layout.expire_log_dir.chmod(0o750)
    return set(render(config, layout, dataclasses.replace(params, vmail_uid=vmail.pw_uid)))


def give_key_to_vmail(config: Config) -> None:
    """filtermail signs as the vmail user: the DKIM key is root's, readable by vmail's group."""
    path = config.dkim_key_path
    try:
        vmail = pwd.getpwnam(config.vmail_user)
        os.chown(path, 0, vmail.pw_gid)
        path.chmod(0o640)
    except KeyError:
        raise RelayError(f"unix user {config.vmail_user!r} does not exist (vmail_user)") from None
    except OSError as exc:
        raise RelayError(
            f"cannot give {path} (dkim_key_path) to {config.vmail_user}: {exc}"
        ) from None


def make_dkim_key(config: Config) -> str | None:
    """Make the relay's DKIM key if there is none, and return its DNS record (None if it was
    there). Either way the key is root's, readable by vmail's group (filtermail signs as vmail).
    """
    path = config.dkim_key_path
    record = None
    if not path.exists():
        from filtermail import dkim  # only signing relays and the dkim-key command need it

        path.parent.mkdir(parents=True, exist_ok=True)
        record = dkim.generate_key(path, config.dkim_selector, config.mail_domain)
    give_key_to_vmail(config)
    return record


def ensure_dkim_key(config: Config) -> str | None:
    """``make_dkim_key`` for a relay that signs; None for one that does not."""
    return make_dkim_key(config) if config.signs_dkim else None


def rpc(layout: Layout) -> xmlrpc.client.ServerProxy:
    """supervisord's XML-RPC interface on this relay's control socket."""
    transport = SupervisorTransport(None, None, f"unix://{layout.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport)


def supervisord_command(layout: Layout) -> list[str]:
    """How ``up`` starts supervisord: Debian's, through ``lean_supervisord`` (see there) with
    the Python that Debian's ``supervisord`` script names; that script itself if it is not a
    Python one."""
    script = shutil.which(SUPERVISORD)
    if script is None:
        raise RelayError("supervisord not found: install Debian's supervisor package")
    with open(script, "rb") as file:
        first = file.readline(200)
    args = [str(layout.supervisord_conf)]
    if not (first.startswith(b"#!") and b"python" in first):
        return [script, "-c", *args]
    interpreter = first[2:].decode(errors="replace").split()
    lean = Path(__file__).with_name("lean_supervisord.py")
    return [*interpreter, "-I", str(lean), "-c", *args]


def supervisord_pid(layout: Layout) -> int | None:
    """The pid of this relay's supervisord if it runs, else None. Changes nothing.

    After a crash or reboot the pidfile may name an unrelated process that reuses the pid:
    only a supervisord started with this relay's configuration counts. (supervisord itself
    overwrites a stale pidfile when it starts.)
    """
    try:
        pid = int(layout.supervisord_pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except PermissionError:  # /proc mounted with hidepid, and we are not root
        raise RelayError(
            f"cannot tell whether supervisord (pid {pid}) runs: /proc/{pid} is not readable; "
            "run as root"
        ) from None
    ours = any(SUPERVISORD.encode() in arg for arg in cmdline[:3]) and (
        str(layout.supervisord_conf).encode() in cmdline
    )
    return pid if ours else None


def up(config: Config, layout: Layout, params: RenderParams, timeout: float = 30) -> bool:
    """Start the relay, or bring a running one in line with its configuration.

    On a running relay only what changed restarts: a daemon whose program section changed (it
    carries digests of chatmail.ini and of the installed code) is restarted, with its sockets
    handed to its successor (chatmaild.handoff); Dovecot (SIGHUP) and Postfix (postfix reload)
    re-read their configuration only if it changed since they last read it (a Dovecot reload
    drops logins in progress); a port in use is reported before anything starts; and a
    program someone stopped is started again. True if supervisord was started.
    """
    command = supervisord_command(layout)
    running = supervisord_pid(layout) is not None
    if not running:
        ports.check_free(ports.relay_ports(config, params))
    prepare(config, layout, params)
    if not running:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise RelayError(
                f"supervisord did not start: {(result.stderr or result.stdout).strip()}"
            )
        for name in RELOADABLE:
            mark_applied(layout, name)
        wait_ready(layout, params, timeout)
        return True
    server = rpc(layout)
    try:
        reload_changed(server, layout)
        _update(server)
        server.supervisor.startAllProcesses(True)  # those already running are left alone
    except RPC_ERRORS as exc:
        raise RelayError(f"supervisord at {layout.supervisor_socket} failed: {exc}") from None
    wait_ready(layout, params, timeout)
    return False


def _update(server: xmlrpc.client.ServerProxy) -> None:
    """What ``supervisorctl update`` does: re-read the file, replace changed programs.

    One program at a time, as supervisorctl does: each restarts (and hands its sockets to its
    successor) without waiting for the others to stop.
    """
    added, changed, removed = server.supervisor.reloadConfig()[0]
    for name in removed:
        if _stopped(server, name):
            server.supervisor.removeProcessGroup(name)
    for name in changed:
        if _stopped(server, name):
            server.supervisor.removeProcessGroup(name)
            server.supervisor.addProcessGroup(name)
    for name in added:
        server.supervisor.addProcessGroup(name)


def _stopped(server: xmlrpc.client.ServerProxy, name: str) -> bool:
    results = server.supervisor.stopProcessGroup(name, True)
    failed = [r for r in results if r["status"] != SUCCESS]
    for result in failed:
        log.error("could not stop %s: %s", result["name"], result["description"])
    return not failed


def wait_ready(layout: Layout, params: RenderParams, timeout: float) -> None:
    """Wait until every program is RUNNING, the sockets exist, Dovecot greets on IMAP and
    Postfix listens for submission."""
    deadline = time.monotonic() + timeout
    while True:
        sockets = all(
            s.exists()
            for s in (layout.doveauth_socket, layout.lastlogin_socket, layout.metadata_socket)
        )
        if (
            sockets
            and _imap_greets(params.listen, params.ports.imap)
            # not an SMTP greeting: a connection would make Postfix start an smtpd and its
            # tlsmgr (23 MB) that an idle relay does not need
            and ports.listening(params.ports.submission)
            and _all_running(layout)
        ):
            return
        if time.monotonic() > deadline:
            raise RelayError(
                f"relay not ready after {timeout:.0f}s: see {layout.log_dir}/ and "
                f"'{SUPERVISORCTL} -c {layout.supervisord_conf} status'"
            )
        time.sleep(0.1)


def processes(layout: Layout) -> list[dict]:
    """supervisord's record of each program: name, statename, pid, description, ..."""
    return rpc(layout).supervisor.getAllProcessInfo()


def _all_running(layout: Layout) -> bool:
    try:
        infos = processes(layout)
    except RPC_ERRORS:
        return False
    return bool(infos) and all(info["statename"] == "RUNNING" for info in infos)


def _imap_greets(host: str, port: int) -> bool:
    try:
        with imaplib.IMAP4(host, port, timeout=2):  # leaving logs out cleanly
            return True
    except (OSError, imaplib.IMAP4.error):
        return False


def down(layout: Layout, timeout: float = 30) -> bool:
    """Stop supervisord and everything under it; True if something was running."""
    pid = supervisord_pid(layout)
    if pid is None:
        return False
    try:
        rpc(layout).supervisor.shutdown()
    except RPC_ERRORS:
        with contextlib.suppress(ProcessLookupError):  # it is gone already
            os.kill(pid, signal.SIGTERM)  # its control socket is gone: stop it directly
    deadline = time.monotonic() + timeout
    while supervisord_pid(layout) is not None:
        if time.monotonic() > deadline:
            raise RelayError(f"supervisord (pid {pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    return True


def status(layout: Layout) -> str:
    """One line per program, or a line saying nothing runs."""
    if supervisord_pid(layout) is None:
        return f"not running (state directory {layout.state_dir})"
    try:
        infos = processes(layout)
    except RPC_ERRORS as exc:
        return f"supervisord runs, but does not answer on {layout.supervisor_socket}: {exc}"
    return "\n".join(
        f"{info['name']:<20} {info['statename']:<9} {info['description']}" for info in infos
    )
