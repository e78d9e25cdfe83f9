"""A whole relay (Dovecot, doveauth, lastlogin under supervisord) in a temp dir on loopback.

Started through ``relay.supervise.up`` from the ``relay.render`` rendering, exactly as
``chatmail-relay up`` starts production: what is tested is what ships.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from crontab import cron_entries
from daemons import write_ini
from helpers_env import free_port, require, require_binary, require_root

from chatmaild import config
from relay import supervise
from relay.render import Layout, Ports, RenderParams, code_digest


@dataclass
class Relay:
    cfg: config.Config
    layout: Layout
    params: RenderParams
    tmp: Path

    @property
    def imap_port(self) -> int:
        return self.params.ports.imap

    @property
    def ports(self) -> Ports:
        return self.params.ports

    def doveadm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["doveadm", "-c", str(self.layout.dovecot_conf), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def ctl(self, *args: str) -> str:
        return subprocess.run(
            ["supervisorctl", "-c", str(self.layout.supervisord_conf), *args],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    def log(self, name: str) -> str:
        return (self.layout.log_dir / name).read_text(errors="replace")

    def logs(self) -> dict[str, str]:
        """Every log file (the expiry's are in a directory of their own): name -> text."""
        log_dir = self.layout.log_dir
        return {
            str(path.relative_to(log_dir)): path.read_text(errors="replace")
            for path in sorted(log_dir.rglob("*"))
            if path.is_file()
        }


@functools.cache
def bin_dir() -> Path:
    """The daemons run as vmail from this venv's console scripts (pip install . into it).

    They run the installed copy of the code: it must be this tree's, or the tests would
    silently test old code (``./relay.sh test`` installs it first).
    """
    path = Path(sys.executable).parent
    require((path / "doveauth").exists(), f"no doveauth in {path}: pip install . into the venv")
    installed = subprocess.run(
        [str(path / "python"), "-I", "-c", "from relay.render import code_digest as d; print(d())"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout.strip()
    assert installed == code_digest(), f"the venv of {path} holds other code: pip install . again"
    return path


def start_relay(
    extra_ini: str = "", environ: dict[str, str] | None = None, **render_params
) -> Relay:
    """A relay as ``up`` starts it, in a temporary directory on free ports. ``environ``: extra
    environment for supervisord and so every daemon (e.g. ``SSL_CERT_FILE`` for a test's
    push gateway), as an operator's service manager would set it. ``render_params``: more
    ``RenderParams`` (the expiry's schedule stays in the state directory unless one says)."""
    require_root()
    for binary in ("dovecot", "doveadm", "doveconf", "supervisord", "supervisorctl", "postfix"):
        require_binary(binary)
    tmp = Path(tempfile.mkdtemp(prefix="chatmail-test-"))
    tmp.chmod(0o755)  # the daemons run as vmail and must traverse it
    loopback_ports = "".join(
        f"{name} = {free_port()}\n"
        for name in (
            "filtermail_smtp_port",
            "filtermail_smtp_port_incoming",
            "postfix_reinject_port",
            "postfix_reinject_port_incoming",
        )
    )
    dkim_key = f"dkim_key_path = {tmp / 'dkim' / 'opendkim.private'}\n"
    ini = write_ini(tmp, loopback_ports + dkim_key + extra_ini)
    ini.chmod(0o644)
    cfg = config.load(ini)
    layout = Layout(tmp / "state")
    ports = Ports(**{name: free_port() for name in dataclasses.asdict(Ports())})
    params = RenderParams(ports=ports, bin_dir=bin_dir(), **render_params)
    relay = Relay(cfg, layout, params, tmp)
    try:
        supervise.ensure_dkim_key(cfg)
        with mock.patch.dict(os.environ, environ or {}):  # up's children inherit it
            supervise.up(cfg, layout, params, timeout=60)
    except BaseException:
        stop_relay(relay)
        raise
    return relay


def chatmail_relay(*args: str, environ: dict | None = None) -> subprocess.CompletedProcess:
    """The installed ``chatmail-relay`` console script, as ``./relay.sh up`` runs it, with
    ``environ`` added to the environment (``up`` hands it on to supervisord and the daemons).

    A test's ``up`` names a ``--schedule-dir``: without one, ``up`` installs the daily expiry
    into the machine's /etc/cron.d (or systemd's directory), which no test may do."""
    if args[:1] == ("up",):
        assert "--schedule-dir" in args, "a test's up must not install into /etc/cron.d"
    return subprocess.run(
        [str(bin_dir() / "chatmail-relay"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(environ or {})},
    )


def relaxed_ini(text: str, tmp: Path, **overrides: str) -> str:
    """``chatmail-relay init``'s chatmail.ini with its files in ``tmp`` and free loopback ports,
    and the values in ``overrides``.

    Its limits are ones any test machine meets: a busy one must not refuse new accounts.
    """
    values = {
        "mailboxes_dir": f"{tmp}/mail",
        "nocreate_file": f"{tmp}/nocreate",
        "min_free_disk_space": "1M",
        "min_available_memory": "1M",
        "max_load_1m": "1000",
        "notification_queue_dir": f"{tmp}/notifications",
        "notification_url": "http://127.0.0.1:9/notify",  # loopback, nothing listens
        **loopback_ports(tmp),
        **overrides,
    }
    for name, value in values.items():
        text, found = re.subn(rf"^{name} *=.*$", f"{name} = {value}", text, flags=re.MULTILINE)
        assert found == 1, f"chatmail-relay init wrote no single {name}"
    return text


def free_port_args() -> tuple[str, ...]:
    """--imap-port N first, then the other public ports: all free."""
    names = ("imap", "imaps", "smtp", "submission", "submissions")
    return tuple(arg for name in names for arg in (f"--{name}-port", str(free_port())))


def cron_job(path: Path) -> tuple[str, str, dict[str, str]]:
    """The one job of a cron.d file: its user, its command as cron hands it to the shell (a
    backslash-percent becomes %; an unescaped % would end the command) and the file's
    variables."""
    raw, jobs = cron_entries(path)
    variables = {
        name: value[1:-1] if value[:1] == value[-1:] == '"' else value
        for name, value in raw.items()
    }
    ((*_times, user, command),) = jobs
    assert not re.search(r"(?<!\\)%", command), "an unescaped % would cut the command"
    return user, command.replace("\\%", "%"), variables


def run_as_cron(path: Path) -> subprocess.CompletedProcess:
    """Run the job of the cron.d file ``path`` now, as Debian's cron would at its minute: as
    its user, from that user's home, with umask 022 and only the environment cron gives a job
    (checked with cron 3.0pl1: HOME, LOGNAME, SHELL=/bin/sh, PATH=/usr/bin:/bin, then the
    file's variables), through /bin/sh -c."""
    runuser = require_binary("runuser")
    user, command, variables = cron_job(path)
    home = pwd.getpwnam(user).pw_dir
    env = {
        "HOME": home,
        "LOGNAME": user,
        "SHELL": "/bin/sh",
        "PATH": "/usr/bin:/bin",
        **variables,
    }
    return subprocess.run(
        # -m: keep exactly this environment (runuser would set SHELL to the user's nologin)
        [runuser, "-m", "-u", user, "--", "/bin/sh", "-c", command],
        env=env,
        cwd=home,
        umask=0o022,
        capture_output=True,
        text=True,
        timeout=120,
    )


def loopback_ports(tmp: Path) -> dict[str, str]:
    """chatmail.ini values: free loopback ports for the filters, and a DKIM key in ``tmp``."""
    names = (
        "filtermail_smtp_port",
        "filtermail_smtp_port_incoming",
        "postfix_reinject_port",
        "postfix_reinject_port_incoming",
    )
    return {
        **{name: str(free_port()) for name in names},
        "dkim_key_path": f"{tmp}/dkim/opendkim.private",
    }


def loopback_ports_ini(tmp: Path) -> str:
    """:func:`loopback_ports` as chatmail.ini lines, for a chatmail.ini without them."""
    return "".join(f"{name} = {value}\n" for name, value in loopback_ports(tmp).items())


def stop_relay(relay: Relay) -> None:
    supervise.down(relay.layout)
    shutil.rmtree(relay.tmp, ignore_errors=True)


def wait_for(predicate, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
