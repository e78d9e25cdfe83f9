"""The mailbox store: where an account lives on disk, and how files there are written.

Layout (shared with existing chatmail relays, so operators switch without migrating)::

    <mailboxes_dir>/<addr>/password             the Dovecot password hash, e.g. {SHA512-CRYPT}$6$...
    <mailboxes_dir>/<addr>/enforceE2EEincoming  marker: incoming mail must be encrypted
    <mailboxes_dir>/<addr>/                     also Dovecot's maildir (cur/ new/ tmp/)

``user_dir`` is the only function that turns an address from the network into a path; everything
else goes through it, and ``account_name`` decides which directory names under
``mailboxes_dir`` are accounts at all. The last-login rule lives here too: the day of an
account's last login is the mtime of its password file, set by lastlogin (``login_day``) and
read by expiry (``last_login``, ``inactive``). Files are written atomically (temporary file,
fsync, rename or link), so a crash or a full disk never leaves a half-written password file.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

PASSWORD_FILE = "password"
DAY = 86400  # seconds; last logins are kept at day granularity (UTC days)
ENFORCE_E2EE_FILE = "enforceE2EEincoming"

# RFC 5321 §4.5.3.1: 64 octets of local part, 254 of address (256 of path minus the brackets).
MAX_LOCALPART = 64
MAX_ADDRESS = 254
_LOCALPART_RE = re.compile(r"[a-z0-9._-]+")
_DOMAIN_RE = re.compile(
    r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
    r"|\[\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\]"
)


class InvalidAddress(ValueError):
    """The address cannot name an account directory; the message says why."""


def check_address(addr: str) -> tuple[str, str]:
    """Return (localpart, domain) of a well-formed relay address, or raise InvalidAddress.

    Only lowercase ``[a-z0-9._-]`` local parts: no ``/``, no NUL, no leading dot, no ``..``,
    so the address is always a single, harmless path component.
    """
    if not isinstance(addr, str) or len(addr) > MAX_ADDRESS:
        raise InvalidAddress("address too long")
    if addr.count("@") != 1:
        raise InvalidAddress("address needs exactly one @")
    localpart, domain = addr.split("@")
    if not localpart or len(localpart) > MAX_LOCALPART:
        raise InvalidAddress("local part empty or too long")
    if not _LOCALPART_RE.fullmatch(localpart):
        raise InvalidAddress("local part has characters outside a-z 0-9 . _ -")
    if localpart.startswith(".") or ".." in localpart:
        raise InvalidAddress("local part starts with a dot or has two dots in a row")
    if not _DOMAIN_RE.fullmatch(domain):
        raise InvalidAddress("bad domain")
    return localpart, domain


def user_dir(mailboxes_dir: Path, addr: str) -> Path:
    """The directory of account ``addr``; raises InvalidAddress for anything unsafe."""
    check_address(addr)
    return mailboxes_dir / addr


def account_name(name: str) -> bool:
    """Whether ``name``, an entry of ``mailboxes_dir``, can be an account's directory."""
    try:
        check_address(name)
    except InvalidAddress:
        return False
    return True


def day_start(seconds: float) -> int:
    """The start (UTC) of the day of unix time ``seconds``."""
    seconds = int(seconds)
    return seconds - seconds % DAY


def login_day(value: str, now: float) -> int:
    """The day to record for a login at unix time ``value`` (a string from Dovecot), which must
    not lie in the future: a time far ahead would keep the account from ever expiring."""
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise ValueError("last-login value is not a unix time")
    seconds = int(value)
    if seconds > now + DAY:
        raise ValueError("last-login time lies in the future")
    return day_start(seconds)


def last_login(udir: Path) -> int | None:
    """The day (its start, unix time) of the last login of the account in ``udir``; None if
    it has no password file. The password file is never followed if it is a symlink."""
    try:
        return day_start(os.lstat(os.path.join(udir, PASSWORD_FILE)).st_mtime)
    except FileNotFoundError:
        return None


def inactive(login_day_start: int, now: float, days: int) -> bool:
    """Whether an account last logged in on the day starting at ``login_day_start`` has been
    unused for more than ``days`` whole days at ``now``: a login today or up to ``days`` days
    ago keeps it. Epoch seconds throughout, so the host's time zone plays no part."""
    return day_start(now) - login_day_start > days * DAY


def _write_temp(directory: Path, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    # the new name must be on disk too before we answer as if it were
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part."""
    tmp = _write_temp(path.parent, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def create_exclusive(
    path: Path, data: bytes, mode: int = 0o600, deadline: float | None = None
) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True if this call created it.

    ``link()`` fails if the name exists, atomically across threads and processes, so of many
    concurrent creators exactly one wins and the others can read the winner's complete file.
    Past ``deadline`` (time.monotonic()) it never creates the file: False if it exists, else
    TimeoutError, since the caller may already have answered that there is no such file.
    """
    tmp = _write_temp(path.parent, data, mode)
    try:
        # the last moment before the file exists: no abandoned creation may commit after it
        if deadline is not None and time.monotonic() > deadline:
            if os.path.lexists(path):
                return False
            raise TimeoutError(f"deadline passed before {path} was created")
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def read_password(udir: Path) -> str | None:
    """The stored password hash of the account in ``udir``, or None if there is no account."""
    try:
        with open(os.path.join(udir, PASSWORD_FILE), "rb") as fp:
            text = fp.read(4096).decode("utf-8").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise OSError(f"{udir / PASSWORD_FILE} is not UTF-8") from None
    if not text:
        raise OSError(f"{udir / PASSWORD_FILE} is empty")
    # a bare crypt(3) hash (written without Dovecot's {SCHEME} prefix) is still verifiable
    if text.startswith("$"):
        return "{CRYPT}" + text
    return text


def create_account(
    udir: Path, password_hash: str, deadline: float | None = None
) -> tuple[str, bool]:
    """Create the account in ``udir`` unless it exists; return (hash on disk, created?).

    Safe against any number of concurrent creators, in threads or processes: exactly one
    password file wins, and every caller gets the hash that is on disk afterwards. The password
    file commits the account: if ``deadline`` (time.monotonic()) has passed just before that
    step, none is created (TimeoutError, unless another creator's file is there).
    """
    password_file = udir / PASSWORD_FILE
    try:
        udir.mkdir(mode=0o700, parents=True)
        _fsync_dir(udir.parent)
    except FileExistsError:
        pass
    marker = udir / ENFORCE_E2EE_FILE
    if not marker.exists():
        atomic_write(marker, b"")
    if create_exclusive(password_file, password_hash.encode("utf-8"), deadline=deadline):
        return password_hash, True
    stored = read_password(udir)
    if stored is None:  # deleted in between (account expiry): the caller may retry
        raise OSError(f"{password_file} vanished during creation")
    return stored, False
