"""The relay as production starts it, and what it delivered.

``relay.render`` + ``relay.supervise.up`` (supervisord with Dovecot, Postfix, doveauth,
lastlogin and the two filtermails) in the benchmark's temporary root, every port on loopback
and free: the public ones (IMAP, IMAPS, SMTP, submission, submissions) and the loopback ones
of chatmail.ini (the filters' and the reinjection listeners'), with its own chatmail.ini and
DKIM key in that root, as the integration tests start it. ``limits`` has the servers it is
compared with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from chatmaild import config as chatmail_config
from relay import supervise
from relay.render import Layout, Ports, RenderParams

from .env import Setup, free_port
from .procs import read_pid

LOOPBACK_PORT_KEYS = (
    "filtermail_smtp_port",
    "filtermail_smtp_port_incoming",
    "postfix_reinject_port",
    "postfix_reinject_port_incoming",
)


@dataclass(frozen=True)
class Relay:
    """A running relay: where its files are, its ports and its chatmail.ini."""

    layout: Layout
    ports: Ports
    config: chatmail_config.Config


# every port handed out by free_ports in this run: the kernel may offer a released one again
_given: list[int] = []


def free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, none handed out before in this run."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(free_port(_given))
        _given.append(ports[-1])
    return ports


def relay_ini(setup: Setup, extra_ini: str = "") -> Path:
    """The relay's chatmail.ini: the benchmark's, free loopback ports, a DKIM key in the root.

    Push notifications go to a loopback port nothing listens on, unless ``extra_ini`` sets
    ``notification_url`` (a stand-in gateway).
    """
    loopback = zip(LOOPBACK_PORT_KEYS, free_ports(len(LOOPBACK_PORT_KEYS)), strict=True)
    ini = setup.root / "relay.ini"
    url = "notification_url = http://127.0.0.1:9/notify\n"  # loopback: nothing leaves
    ini.write_text(
        setup.ini.read_text()
        + "".join(f"{name} = {port}\n" for name, port in loopback)
        + f"dkim_key_path = {setup.root / 'dkim' / 'opendkim.private'}\n"
        + f"notification_queue_dir = {setup.root / 'notifications'}\n"
        + ("" if re.search(r"^notification_url\s*=", extra_ini, re.MULTILINE) else url)
        + extra_ini
    )
    ini.chmod(0o644)
    return ini


@contextlib.contextmanager
def running_relay(
    setup: Setup, extra_ini: str = "", environ: Mapping[str, str] | None = None
) -> Iterator[Relay]:
    """The relay under ``setup.root/relay``, stopped (``supervise.down``) at the end.

    ``extra_ini`` is added to its chatmail.ini (e.g. rate limits that never refuse);
    ``environ`` to the environment ``up`` starts supervisord, and so every daemon, with (e.g.
    ``SSL_CERT_FILE`` for a stand-in push gateway), as an operator's service manager would.
    """
    config = chatmail_config.load(relay_ini(setup, extra_ini))
    layout = Layout(setup.root / "relay")
    names = [f.name for f in dataclasses.fields(Ports)]
    ports = Ports(**dict(zip(names, free_ports(len(names)), strict=True)))
    params = RenderParams(ports=ports, bin_dir=setup.bin_dir)
    try:
        supervise.ensure_dkim_key(config)
        with mock.patch.dict(os.environ, environ or {}):  # up's children inherit it
            supervise.up(config, layout, params, timeout=60)
        pid = supervise.supervisord_pid(layout)
        if pid is not None:
            setup.other.roots.add(pid)
        yield Relay(layout, ports, config)
    finally:
        stopped = supervise.down(layout)
        # interrupted while supervisord was starting, it may write its pidfile a moment later
        if not stopped and read_pid(layout.supervisord_pid, timeout=5) is not None:
            supervise.down(layout)


def program_pids(layout: Layout) -> dict[str, int]:
    """The pid of each running program under the relay's supervisord, by program name."""
    return {
        info["name"]: info["pid"]
        for info in supervise.processes(layout)
        if info["statename"] == "RUNNING"
    }


SUPERVISORD = "supervisord"
WHOLE = "whole relay"


def memory_roots(layout: Layout) -> tuple[dict[str, int], frozenset[str]]:
    """Roots for ``procs.RssSampler``: supervisord alone, each program, the whole relay."""
    supervisord = supervise.supervisord_pid(layout)
    if supervisord is None:
        raise RuntimeError("the relay's supervisord is not running")
    roots = {SUPERVISORD: supervisord, **program_pids(layout), WHOLE: supervisord}
    return roots, frozenset({SUPERVISORD})


@contextlib.contextmanager
def deliveries_held(conf_dir: Path) -> Iterator[None]:
    """The Postfix of ``conf_dir`` accepts mail as ever but delivers none until the end.

    Its cleanup puts every message it writes on hold (``header_checks = static:HOLD``, one log
    line a message) instead of handing it to the queue manager; afterwards the setting goes,
    the held mail is released and the queue flushed, so it is delivered. Everything before
    cleanup (smtpd, and the filters in front of it) runs unchanged. (Stopping the queue
    manager instead slows cleanup down: each message's trigger waits for it.)
    """

    def postfix(*args: str) -> None:
        subprocess.run([*args[:1], "-c", str(conf_dir), *args[1:]], check=True, **QUIET)

    postfix("postconf", "-e", "header_checks = static:HOLD")
    postfix("postfix", "reload")
    time.sleep(1)  # idle processes restart with the new setting
    try:
        yield
    finally:
        postfix("postconf", "-X", "header_checks")
        postfix("postfix", "reload")
        time.sleep(1)
        postfix("postsuper", "-H", "ALL")
        postfix("postqueue", "-f")


@contextlib.contextmanager
def proxy_filter_replaced(conf_dir: Path, port: int, target: str) -> Iterator[None]:
    """The listener on ``port`` of the Postfix of ``conf_dir`` hands mail to ``target``
    (host:port) instead of its own smtpd_proxy_filter until the end."""
    services = postconf(conf_dir, "-M").splitlines()
    (service,) = (line.split()[0] for line in services if line.split()[0].endswith(f":{port}"))
    name = f"{service}/inet/smtpd_proxy_filter"
    before = postconf(conf_dir, "-P", "-h", name).strip()

    def switch(value: str) -> None:
        postconf(conf_dir, "-P", f"{name}={value}")
        subprocess.run(["postfix", "-c", str(conf_dir), "reload"], check=True, **QUIET)
        time.sleep(1)  # idle processes restart with the new setting

    switch(target)
    try:
        yield
    finally:
        switch(before)


def postconf(conf_dir: Path, *args: str) -> str:
    run = subprocess.run(["postconf", "-c", str(conf_dir), *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"postconf {' '.join(args)}: {run.stderr.strip()}")
    return run.stdout


QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def delivered(mailboxes: Path) -> int:
    """Messages in the accounts' maildirs under ``mailboxes`` (in new/ and cur/)."""
    return sum(
        1
        for account in mailboxes.iterdir()
        for sub in ("new", "cur")
        if (account / sub).is_dir()
        for _ in (account / sub).iterdir()
    )


def wait_delivered(mailboxes: Path, expected: int, timeout: float = 120) -> int:
    """``delivered`` once it reaches ``expected``, or once it stopped growing for 10 s."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        count = delivered(mailboxes)
        if count >= expected or time.monotonic() > deadline:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > 10:
            return count
        time.sleep(0.2)
