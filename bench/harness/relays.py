"""The relay as production starts it, and the "limit" Dovecot to compare it with.

The relay: ``relay.render`` + ``relay.supervise.up`` (supervisord with Dovecot and the daemons)
in the benchmark's temporary root, IMAP on a free loopback port.

The limit: a second Dovecot (``dovecot -c``) from the very dovecot.conf the relay rendered, with
its dict passdb/userdb replaced by a passwd-file holding the same SHA512-CRYPT hashes. It is
Dovecot without any external lookup: what Dovecot alone can do on this machine.
"""

from __future__ import annotations

import contextlib
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from chatmaild import config as chatmail_config
from relay import supervise
from relay.render import Layout, Ports, RenderParams

from .env import VMAIL, Account, Setup
from .procs import read_pid, tcp_greets, wait_gone, wait_until


@contextlib.contextmanager
def running_relay(setup: Setup, port: int) -> Iterator[Layout]:
    """The relay under ``setup.root/relay``, stopped (``supervise.down``) at the end."""
    config = chatmail_config.load(setup.ini)
    layout = Layout(setup.root / "relay")
    params = RenderParams(ports=Ports(imap=port), bin_dir=setup.bin_dir)
    try:
        supervise.up(config, layout, params, timeout=60)
        pid = supervise.supervisord_pid(layout)
        if pid is not None:
            setup.other.roots.add(pid)
        yield layout
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


@contextlib.contextmanager
def running_limit_dovecot(
    setup: Setup, layout: Layout, relay_port: int, port: int
) -> Iterator[None]:
    """The limit Dovecot on ``port``, from ``layout``'s dovecot.conf, stopped at the end."""
    home = setup.root / "limit"
    home.mkdir(mode=0o755)
    passwd = home / "passwd"
    write_passwd_file(setup.accounts, setup.mailboxes, passwd)
    conf = home / "dovecot.conf"
    rendered = layout.dovecot_conf.read_text()
    conf.write_text(limit_dovecot_conf(rendered, home, passwd, relay_port, port))
    subprocess.run(["dovecot", "-c", str(conf)], check=True, stdin=subprocess.DEVNULL)
    pid = read_pid(home / "run" / "master.pid")
    if pid is not None:
        setup.other.roots.add(pid)
    try:
        wait_until(tcp_greets(port, b"* OK"), 30, f"no IMAP greeting on port {port}")
        yield
    finally:
        subprocess.run(
            ["doveadm", "-c", str(conf), "stop"],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        wait_gone(pid, 30)


def limit_dovecot_conf(rendered: str, home: Path, passwd: Path, relay_port: int, port: int) -> str:
    """The relay's dovecot.conf with a passwd-file passdb/userdb, as its own instance."""
    text = _replace_dict_blocks(
        rendered, "passdb", f"driver = passwd-file\n  args = scheme=SHA512-CRYPT {passwd}"
    )
    text = _replace_dict_blocks(text, "userdb", f"driver = passwd-file\n  args = {passwd}")
    for pattern, replacement in (
        (r"^base_dir = .*$", f"base_dir = {home}/run"),
        (r"^state_dir = .*$", f"state_dir = {home}/state"),
        (r"^instance_name = .*$", f"instance_name = chatmail-limit-{port}"),
        (r"^log_path = .*$", f"log_path = {home}/dovecot.log"),
        (rf"^([ \t]*)port = {relay_port}$", rf"\g<1>port = {port}"),
    ):
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(f"rendered dovecot.conf changed shape: {pattern!r} not found once")
    return text


def _replace_dict_blocks(text: str, kind: str, body: str) -> str:
    """Replace every top-level ``kind { driver = dict ... }`` block by one block with ``body``."""
    blocks = [
        m
        for m in re.finditer(rf"^{kind} \{{\n.*?^\}}\n", text, flags=re.MULTILINE | re.DOTALL)
        if "driver = dict" in m.group()
    ]
    if not blocks:
        raise RuntimeError(f"rendered dovecot.conf has no {kind} with driver = dict")
    for m in reversed(blocks[1:]):
        text = text[: m.start()] + text[m.end() :]
    first = blocks[0]
    return text[: first.start()] + f"{kind} {{\n  {body}\n}}\n" + text[first.end() :]


def write_passwd_file(accounts: tuple[Account, ...], mailboxes: Path, path: Path) -> None:
    """user:hash:uid:gid::home:: lines holding the very hashes the relay's accounts have."""
    vmail = pwd.getpwnam(VMAIL)
    path.write_text(
        "".join(
            f"{a.addr}:{a.hashed}:{vmail.pw_uid}:{vmail.pw_gid}::{mailboxes / a.addr}::\n"
            for a in accounts
        )
    )
    shutil.chown(path, "root", "dovecot")  # read by Dovecot's auth process (user dovecot)
    path.chmod(0o640)
