"""One expiry run over ``mailboxes_dir``: which accounts, messages and files go (``rules``),
removed by one ``Sweep`` that counts what it removed (or, without ``--remove``, would remove).

Races are expected, since Dovecot and doveauth keep running: a file that vanishes before it is
removed was removed by someone else and is not counted; an account is checked once more right
before it goes, so one that logged in during the run stays; names under ``mailboxes_dir`` that
are no address (``chatmaild.mailbox.account_name``) and symlinks are left alone, so nothing
outside ``mailboxes_dir`` is ever touched.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from chatmaild.mailbox import account_name, inactive, last_login

from . import rules
from .maildir import Folder, folders, messages, temp_files
from .rules import Limits

log = logging.getLogger(__name__)


@dataclass
class Totals:
    accounts: int = 0
    accounts_removed: int = 0
    messages_removed: int = 0
    bytes_removed: int = 0
    files_removed: int = 0  # tmp/ leftovers, Dovecot's files, maildirsize
    errors: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Sweep:
    """Removes what it is given, or only counts it when ``remove`` is False; ``listing`` gets
    (what, path) of each (``-v``)."""

    def __init__(self, remove: bool, listing: Callable[[str, str], None] | None = None) -> None:
        self.remove, self.listing = remove, listing
        self.totals = Totals()

    def _unlink(self, path: str) -> bool:
        if not self.remove:
            return True
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False  # gone meanwhile: Dovecot expunged it, or another run
        except OSError as exc:
            self.totals.errors += 1
            log.error("cannot remove %s: %s", path, exc.strerror)
            return False
        return True

    def message(self, path: str, size: int, reason: str) -> bool:
        if self.listing:
            self.listing(reason, path)
        if not self._unlink(path):
            return False
        self.totals.messages_removed += 1
        self.totals.bytes_removed += size
        self.totals.reasons[reason] = self.totals.reasons.get(reason, 0) + 1
        return True

    def file(self, path: str, what: str) -> bool:
        if self.listing:
            self.listing(what, path)
        if self._unlink(path):
            self.totals.files_removed += 1
            return True
        return False

    def account(self, path: str, what: str) -> None:
        """Remove a whole account directory (never following symlinks inside it)."""
        if self.listing:
            self.listing(what, path)
        if self.remove:
            shutil.rmtree(path, onerror=self._rmtree_error)
        self.totals.accounts_removed += 1

    def _rmtree_error(self, func: object, path: str, exc_info: tuple) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            self.totals.errors += 1
            log.error("cannot remove %s: %s", path, exc_info[1])


def expire_mailboxes(
    mailboxes_dir: str,
    limits: Limits,
    sweep: Sweep,
    trim_to: int | None = None,
    trim_over: int | None = None,
    progress: Callable[[Totals], None] | None = None,
) -> Totals:
    """Expire every account under ``mailboxes_dir``. ``trim_to``: bytes a mailbox that keeps
    more than ``trim_over`` (default: the quota warning's level) is trimmed to
    (``quota.trim``). Raises OSError if ``mailboxes_dir`` is unreadable."""
    from .quota import trim, warning_level

    if trim_to is not None and trim_over is None:
        trim_over = warning_level(trim_to)

    with os.scandir(mailboxes_dir) as entries:
        for entry in entries:
            if not account_name(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            sweep.totals.accounts += 1
            kept = expire_account(entry.path, limits, sweep)
            if trim_to is not None and trim_over is not None and kept > trim_over:
                trim(entry.path, trim_to, limits.now, sweep, limits=limits)
            if progress:
                progress(sweep.totals)
    return sweep.totals


def expire_account(home: str, limits: Limits, sweep: Sweep) -> int:
    """Expire one account; the bytes of mail it keeps (0 if it went)."""
    login = last_login(home)
    if login is None:
        try:
            mtime = os.lstat(home).st_mtime
        except FileNotFoundError:
            return 0
        if rules.orphan_expired(mtime, limits.now) and last_login(home) is None:
            sweep.account(home, "no password")
            return 0
        return 0
    if inactive(login, limits.now, limits.inactive_days):
        again = last_login(home)  # a login during the run keeps it
        if again is not None and inactive(again, limits.now, limits.inactive_days):
            sweep.account(home, "inactive")
            return 0
    found = folders(home)
    removed, kept = expire_messages(home, found, limits, sweep)
    expire_files(found, limits, sweep, removed)
    return kept


def expire_messages(
    home: str, found: list[Folder], limits: Limits, sweep: Sweep
) -> tuple[bool, int]:
    """Remove the old and the large messages; whether any went, and the bytes of those kept."""
    removed, kept = False, 0
    for msg in messages(home, found):
        reason = rules.message_reason(msg, limits)
        if reason is None:
            kept += msg.size
        elif sweep.message(msg.path, msg.size, reason):
            removed = True
    for path, mtime in temp_files(home, found):
        if rules.temp_expired(mtime, limits.now):
            sweep.file(path, "tmp")
    return removed, kept


def expire_files(found: list[Folder], limits: Limits, sweep: Sweep, messages_removed: bool) -> None:
    """Dovecot's files in each folder that may go (``rules``), and the quota count once
    messages went."""
    for folder in found:
        for name in (rules.CACHE_FILE, rules.LOG2_FILE):
            if name not in folder.files:
                continue
            path = os.path.join(folder.path, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if rules.dovecot_file_expired(name, st.st_mtime, limits.now, messages_removed):
                sweep.file(path, "dovecot")
    if messages_removed and found and rules.QUOTA_FILE in found[0].files:
        sweep.file(os.path.join(found[0].path, rules.QUOTA_FILE), "quota count")
