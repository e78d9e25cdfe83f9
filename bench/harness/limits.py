"""The "limit" servers a relay is compared with: the same server without the daemon measured.

The limit Dovecot: a second Dovecot (``dovecot -c``) from the very dovecot.conf the relay
rendered, with its dict passdb/userdb replaced by a passwd-file holding the same SHA512-CRYPT
hashes. It is Dovecot without any external lookup: what Dovecot alone can do on this machine.
Optionally its ``mail_attribute_dict`` (IMAP METADATA) is one of Dovecot's own too, e.g.
``file:%h/dovecot-attributes``, instead of chatmail-metadata's socket.

The limit Postfix: a second Postfix from the very main.cf, master.cf and run-master the relay
rendered, without its ``smtpd_proxy_filter`` lines (no filtermail), on its own free ports and
queue, authenticating with and delivering into the relay's Dovecot: what Postfix alone can do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relay.render import Ports

from .env import VMAIL, Account, Setup, free_port
from .procs import Daemon, read_pid, tcp_greets, wait_gone, wait_until
from .relays import Relay, free_ports


@contextlib.contextmanager
def running_limit_dovecot(
    setup: Setup, relay: Relay, port: int, attribute_dict: str | None = None
) -> Iterator[None]:
    """The limit Dovecot with IMAP on ``port``, from the relay's dovecot.conf, stopped at the end.

    Its IMAPS listener goes to another free port (nothing uses it). ``attribute_dict``, if
    given, replaces the relay's ``mail_attribute_dict``.
    """
    home = setup.root / "limit"
    home.mkdir(mode=0o755)
    passwd = home / "passwd"
    write_passwd_file(setup.accounts, setup.mailboxes, passwd)
    conf = home / "dovecot.conf"
    rendered = relay.layout.dovecot_conf.read_text()
    moved = {relay.ports.imap: port, relay.ports.imaps: free_port([port])}
    conf.write_text(limit_dovecot_conf(rendered, home, passwd, moved, attribute_dict))
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


def limit_dovecot_conf(
    rendered: str,
    home: Path,
    passwd: Path,
    moved: dict[int, int],
    attribute_dict: str | None = None,
) -> str:
    """The relay's dovecot.conf with a passwd-file passdb/userdb, as its own instance.

    ``moved`` maps each of the relay's listening ports to the limit's; ``attribute_dict``, if
    given, replaces its ``mail_attribute_dict``.
    """
    text = _replace_dict_blocks(
        rendered, "passdb", f"driver = passwd-file\n  args = scheme=SHA512-CRYPT {passwd}"
    )
    text = _replace_dict_blocks(text, "userdb", f"driver = passwd-file\n  args = {passwd}")
    port = next(iter(moved.values()))
    substitutions = [
        (r"^base_dir = .*$", f"base_dir = {home}/run"),
        (r"^state_dir = .*$", f"state_dir = {home}/state"),
        (r"^instance_name = .*$", f"instance_name = chatmail-limit-{port}"),
        (r"^log_path = .*$", f"log_path = {home}/dovecot.log"),
    ]
    substitutions += [
        (rf"^([ \t]*)port = {old}$", rf"\g<1>port = {new}") for old, new in moved.items()
    ]
    if attribute_dict is not None:
        substitutions.append(
            (r"^mail_attribute_dict = .*$", f"mail_attribute_dict = {attribute_dict}")
        )
    for pattern, replacement in substitutions:
        text = _substitute_once(pattern, replacement, text, "dovecot.conf")
    return text


def _substitute_once(pattern: str, replacement: str, text: str, what: str) -> str:
    text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise RuntimeError(f"rendered {what} changed shape: {pattern!r} not found once")
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


@dataclass(frozen=True)
class LimitPostfix:
    ports: Ports  # the IMAP ones are the relay's Dovecot's
    pid: int  # its master's
    conf_dir: Path  # its main.cf and master.cf


@contextlib.contextmanager
def running_limit_postfix(setup: Setup, relay: Relay) -> Iterator[LimitPostfix]:
    """The limit Postfix on free ports, stopped at the end.

    Started as the relay starts its own (the rendered run-master: ``postfix check``, then the
    master in the foreground with its log through the same IP filter), by us as root.
    """
    home = setup.root / "limit-postfix"
    conf_dir, queue, data = home / "conf", home / "queue", home / "data"
    for directory in (home, conf_dir, queue):
        directory.mkdir(mode=0o755)
    data.mkdir(mode=0o700)
    shutil.chown(data, "postfix", "postfix")
    smtp, submission, submissions, reinject, reinject_in = free_ports(5)
    ports = dataclasses.replace(
        relay.ports, smtp=smtp, submission=submission, submissions=submissions
    )
    moved = {
        relay.ports.smtp: smtp,
        relay.ports.submission: submission,
        relay.ports.submissions: submissions,
        relay.config.postfix_reinject_port: reinject,
        relay.config.postfix_reinject_port_incoming: reinject_in,
    }
    rendered = relay.layout.postfix_dir
    (conf_dir / "main.cf").write_text(
        limit_postfix_main((rendered / "main.cf").read_text(), queue, data)
    )
    (conf_dir / "master.cf").write_text(
        limit_postfix_master((rendered / "master.cf").read_text(), moved)
    )
    run = conf_dir / "run-master"
    script = relay.layout.postfix_run.read_text()
    if script.count(f"-c {rendered} ") != 2:  # postfix check, then the master
        raise RuntimeError("rendered run-master changed shape: not two '-c DIR'")
    run.write_text(script.replace(f"-c {rendered} ", f"-c {conf_dir} "))
    run.chmod(0o755)
    daemon = Daemon([str(run)], home / "postfix.log", cwd=home)
    setup.other.roots.add(daemon.pid)
    try:
        daemon.wait_ready(tcp_greets(submission, b"220"), 60)
        yield LimitPostfix(ports, daemon.pid, conf_dir)
    finally:
        daemon.stop(30)


def limit_postfix_main(rendered: str, queue: Path, data: Path) -> str:
    """The relay's main.cf with its own queue and data directories."""
    text = rendered
    for name, path in (("queue_directory", queue), ("data_directory", data)):
        text = _substitute_once(rf"^{name} = .*$", f"{name} = {path}", text, "main.cf")
    return text


def limit_postfix_master(rendered: str, moved: dict[int, int]) -> str:
    """The relay's master.cf without its before-queue filters, its inet services moved."""
    text, filters = re.subn(r"^[ \t]+-o smtpd_proxy_filter=.*\n", "", rendered, flags=re.MULTILINE)
    if not filters:
        raise RuntimeError("rendered master.cf changed shape: no smtpd_proxy_filter")

    def move(m: re.Match) -> str:
        port = int(m.group(2))
        if port not in moved:
            raise RuntimeError(f"rendered master.cf listens on port {port}, which is not moved")
        return f"{m.group(1)}:{moved[port]}{m.group(3)}"

    text, services = re.subn(r"^(\S+):(\d+)(\s+inet\s)", move, text, flags=re.MULTILINE)
    if services != len(moved):
        raise RuntimeError(f"rendered master.cf has {services} inet services, not {len(moved)}")
    return text
