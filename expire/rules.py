"""What expiry deletes: pure decisions on times and sizes, the same for ``chatmail-expire`` and
its tests (no disk here).

All times are unix epoch seconds, so the host's time zone plays no part. ``now`` is passed in.

- A message older than ``delete_mails_after`` days goes, wherever it is.
- A message larger than 200 kB goes after ``delete_large_after`` days once a device has had it
  (it is in ``cur/``); one still in ``new/`` waits for the general rule.
- An account unused for more than ``delete_inactive_users_after`` days goes whole
  (``chatmaild.mailbox.inactive``: its password file's mtime, at day granularity).
- An account directory without a password file (a sign-up that failed half way) goes once it
  has not changed for ``ORPHAN_GRACE``: one being created right now is fresh.
- ``tmp/`` files older than a day: Dovecot moves a delivery out of ``tmp/`` within the same
  save, so these are leftovers of a crash (Dovecot itself waits 36 hours).
- Dovecot's own files: none grows without bound (checked with 2.3.19: the transaction log
  rotates at 1 MB, the cache is purged when a fifth of it is deleted). Two can go safely:
  ``dovecot.index.log.2``, the rotated log, older than two days (Dovecot drops it at its next
  rotation, which a quiet mailbox may never reach); and ``dovecot.index.cache`` of a mailbox this
  run removed messages from, if Dovecot has not written it for a day (it is rebuilt on demand).
  The others (``dovecot.index``, ``dovecot.index.log``, ``dovecot-uidlist``,
  ``dovecot-keywords``) are never touched: without them clients lose UIDs, flags or sync state.
- ``maildirsize`` goes whenever messages went, so Dovecot counts the quota again at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatmaild.mailbox import DAY

from .maildir import Message

LARGE = 200_000  # bytes: over this a message is large
TMP_AGE = DAY
ORPHAN_GRACE = 2 * DAY
LOG2_AGE = 2 * DAY
CACHE_IDLE = DAY
CACHE_FILE, LOG2_FILE, QUOTA_FILE = "dovecot.index.cache", "dovecot.index.log.2", "maildirsize"


@dataclass(frozen=True)
class Limits:
    """The thresholds of one run, from chatmail.ini's expiry days and ``now``."""

    now: float
    mails_days: int
    large_days: int
    inactive_days: int

    @property
    def old_before(self) -> float:
        return self.now - self.mails_days * DAY

    @property
    def large_before(self) -> float:
        return self.now - self.large_days * DAY


def message_reason(msg: Message, limits: Limits) -> str | None:
    """Why ``msg`` goes ("old" or "large"), or None if it stays."""
    if msg.mtime < limits.old_before:
        return "old"
    if msg.seen and msg.size > LARGE and msg.mtime < limits.large_before:
        return "large"
    return None


def temp_expired(mtime: float, now: float) -> bool:
    return mtime < now - TMP_AGE


def orphan_expired(mtime: float, now: float) -> bool:
    """Whether an account directory without a password, last changed at ``mtime``, goes."""
    return mtime < now - ORPHAN_GRACE


def dovecot_file_expired(name: str, mtime: float, now: float, messages_removed: bool) -> bool:
    """Whether Dovecot's file ``name`` in a mailbox's root may go; see the module's doc."""
    if name == LOG2_FILE:
        return mtime < now - LOG2_AGE
    if name == CACHE_FILE:
        return messages_removed and mtime < now - CACHE_IDLE
    return False
