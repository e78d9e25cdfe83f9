"""The environment of a benchmark: prerequisites, a temporary root, free ports, accounts.

Everything a benchmark creates lives under one temporary directory, removed at the end whatever
happens; daemons listen on loopback, on free ports or sockets under that directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import multiprocessing
import os
import pwd
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chatmaild.mailbox import ENFORCE_E2EE_FILE, PASSWORD_FILE
from doveauth.hashing import hash_password

from .probes import OtherLoad

DOMAIN = "bench.chatmail.test"
VMAIL = "vmail"
MP = multiprocessing.get_context("spawn")  # never fork: the parent runs threads
DAEMON_PACKAGES = ("chatmaild", "doveauth", "filtermail", "metadata", "relay")


def check_prerequisites(name: str, tools: Iterable[str], executables: Iterable[str]) -> None:
    """Exit with a message unless we are root and the tools, vmail user and daemons are there.

    ``tools`` are looked up on PATH (and /usr/sbin); ``executables`` next to this Python.
    """
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (the daemons run as vmail, Dovecot needs root)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin"
    problems += [
        f"{tool} not found (Debian packages dovecot-core, dovecot-imapd, dovecot-lmtpd, "
        "postfix, supervisor, gnupg: ./relay.sh test installs them)"
        for tool in tools
        if not shutil.which(tool, path=path)
    ]
    try:
        pwd.getpwnam(VMAIL)
    except KeyError:
        problems.append(f"unix user {VMAIL!r} does not exist")
    bin_dir = Path(sys.executable).parent
    problems += [
        f"{bin_dir}/{exe} not found: run with the venv's python"
        for exe in executables
        if not (bin_dir / exe).exists()
    ]
    if problems:
        raise SystemExit(f"{name}: " + "; ".join(problems))


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so context managers stop what they started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def code_digest(base: Path | None = None) -> str:
    """sha256 of the daemons' code, installed (``base`` None) or in a checkout at ``base``."""
    digest = hashlib.sha256()
    for package in DAEMON_PACKAGES:
        if base is None:
            spec = importlib.util.find_spec(package)
            directory = Path(spec.origin).parent if spec and spec.origin else None
        else:
            directory = base / package
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if path.suffix in (".py", ".j2"):
                digest.update(str(path.relative_to(directory.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def checkout_dir() -> Path:
    """The checkout holding bench/ (to compare its code with the installed code)."""
    return Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    """A temporary directory the vmail user can traverse, removed afterwards whatever happens."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port(taken: Iterable[int] = ()) -> int:
    """A TCP port on loopback that nothing listens on now (and not one of ``taken``)."""
    taken = set(taken)
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


def vmail_dir(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` owned by the vmail user."""
    vmail = pwd.getpwnam(VMAIL)
    path.mkdir(mode=mode)
    os.chown(path, vmail.pw_uid, vmail.pw_gid)
    return path


def write_ini(root: Path, mailboxes: Path) -> Path:
    """chatmail.ini with resource limits that never refuse a creation."""
    ini = root / "chatmail.ini"
    ini.write_text(
        "[params]\n"
        f"mail_domain = {DOMAIN}\n"
        f"mailboxes_dir = {mailboxes}\n"
        f"vmail_user = {VMAIL}\n"
        f"nocreate_file = {root}/nocreate\n"
        "min_free_disk_space = 1M\n"
        "min_available_memory = 1M\n"
        "max_load_1m = 1000\n"
    )
    ini.chmod(0o644)
    return ini


@dataclass(frozen=True)
class Account:
    addr: str
    password: str
    hashed: str  # {SHA512-CRYPT}$6$...


def create_accounts(mailboxes: Path, count: int) -> tuple[Account, ...]:
    """Write ``count`` accounts as doveauth would (hashed by doveauth's own function)."""
    passwords = [secrets.token_urlsafe(12) for _ in range(count)]
    with MP.Pool(os.cpu_count() or 1) as pool:
        hashes = pool.map(hash_password, passwords, chunksize=50)
    vmail = pwd.getpwnam(VMAIL)
    accounts = []
    for i, (password, hashed) in enumerate(zip(passwords, hashes, strict=True)):
        addr = f"a{i:08d}@{DOMAIN}"
        udir = mailboxes / addr
        udir.mkdir(mode=0o700)
        (udir / PASSWORD_FILE).write_text(hashed)
        (udir / PASSWORD_FILE).chmod(0o600)
        (udir / ENFORCE_E2EE_FILE).write_text("")
        for path in (udir, udir / PASSWORD_FILE, udir / ENFORCE_E2EE_FILE):
            os.chown(path, vmail.pw_uid, vmail.pw_gid)
        accounts.append(Account(addr, password, hashed))
    return tuple(accounts)


def new_credentials(prefix: str, count: int) -> tuple[tuple[str, str], ...]:
    """(address, password) of ``count`` addresses without an account, all of which may sign up.

    Local parts are ``prefix`` followed by a counter, 9 characters as chatmail.ini requires.
    """
    width = 9 - len(prefix)
    return tuple((f"{prefix}{n:0{width}x}@{DOMAIN}", f"pw-{n:06x}-bench") for n in range(count))


@dataclass(frozen=True)
class Setup:
    """A benchmark's temporary root with chatmail.ini, a mailboxes directory and accounts."""

    root: Path
    ini: Path
    mailboxes: Path
    bin_dir: Path  # where the daemons' executables are: next to this Python
    accounts: tuple[Account, ...]
    other: OtherLoad  # register every process we start as a root here

    def credentials(self) -> tuple[tuple[str, str], ...]:
        return tuple((a.addr, a.password) for a in self.accounts)


def prepare(root: Path, accounts: int) -> Setup:
    mailboxes = vmail_dir(root / "mailboxes", 0o700)
    ini = write_ini(root, mailboxes)
    created = create_accounts(mailboxes, accounts)
    return Setup(root, ini, mailboxes, Path(sys.executable).parent, created, OtherLoad())
