"""The counting behind ``chatmail-fsreport``: accounts and their messages in, a report dict out.

Pure: no disk, no clock (``now`` is passed in, epoch seconds), so tests build any store they
like. Memory stays flat whatever is fed in: per-bucket counters, and a min-heap of at most
``top`` (size, address) pairs for the largest mailboxes; an address is kept only when the caller
asked for addresses. The report's keys are documented in ``expire.fsreport``.

Bounds follow chatmail.ini where expiry does: the last age bounds are ``delete_mails_after``
and ``delete_inactive_users_after`` days, compared as ``expire.rules`` and
``chatmaild.mailbox.inactive`` compare them, so an "older" bucket holds what expiry removes; the
last mailbox bound is the quota (``max_mailbox_size``, binary units as Dovecot reads them).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from chatmaild.mailbox import DAY, day_start

from .maildir import Message
from .rules import LARGE

MIB = 1024 * 1024  # Dovecot's "500M" is MiB (chatmaild.inivalues.parse_size)
DEFAULT_TOP = 5  # largest mailboxes shown (sizes only) without --addresses


class Account(NamedTuple):
    address: str
    last_login: int | None  # start of the day (epoch seconds); None: no password file
    messages: Iterable[Message]  # consumed once, as the report is built


@dataclass(frozen=True)
class Scales:
    """The clock and chatmail.ini's thresholds of one report."""

    now: float
    quota: int  # bytes
    mails_days: int
    inactive_days: int


class Histogram:
    """Count and bytes per bucket: bucket i holds the values up to ``bounds[i]``, the last
    one all above. ``key`` names the bound in the report: ``max_*`` includes it (<=, as
    expiry's rules compare ages and sizes), ``below_*`` does not (<, as a full quota is >=).
    ``scale`` converts a bound into the report's unit (seconds into days)."""

    def __init__(
        self, key: str, bounds: Sequence[int], labels: Sequence[str], scale: int = 1
    ) -> None:
        self.key, self.bounds, self.labels, self.scale = key, tuple(bounds), tuple(labels), scale
        self.find = bisect.bisect_left if key.startswith("max_") else bisect.bisect_right
        self.counts = [0] * (len(self.bounds) + 1)
        self.bytes = [0] * (len(self.bounds) + 1)

    def add(self, value: float, size: int) -> None:
        i = self.find(self.bounds, value)
        self.counts[i] += 1
        self.bytes[i] += size

    def rows(self) -> list[dict]:
        bounds = [b // self.scale for b in self.bounds] + [None]
        return [
            {"label": label, self.key: bound, "count": count, "bytes": size}
            for label, bound, count, size in zip(
                self.labels, bounds, self.counts, self.bytes, strict=True
            )
        ]


def ladder(steps: Sequence[int], last: int) -> tuple[int, ...]:
    """The bounds ``steps`` below ``last``, then ``last`` (a setting) as the final bound."""
    return (*(s for s in steps if s < last), last)


def login_histogram(inactive_days: int) -> Histogram:
    bounds = ladder((0, 1, 7, 30), inactive_days)
    labels = ["today" if b == 0 else f"<={b} d" for b in bounds] + [f">{bounds[-1]} d"]
    return Histogram("max_days", bounds, labels)


def age_histogram(mails_days: int) -> Histogram:
    bounds = ladder((DAY, 7 * DAY), mails_days * DAY)
    labels = [f"<={b // DAY} d" for b in bounds] + [f">{bounds[-1] // DAY} d"]
    return Histogram("max_days", bounds, labels, scale=DAY)


def mailbox_histogram(quota: int) -> Histogram:
    bounds = ladder((1, MIB, 10 * MIB, 100 * MIB), quota)
    labels = ["empty" if b == 1 else f"<{human(b)}" for b in bounds] + [f">={human(bounds[-1])}"]
    return Histogram("below_bytes", bounds, labels)


def message_size_histogram() -> Histogram:
    bounds = (10_000, LARGE, 1_000_000)  # LARGE: over it, expiry's "large" rule applies
    labels = [f"<={decimal(b)}" for b in bounds] + [f">{decimal(bounds[-1])}"]
    return Histogram("max_bytes", bounds, labels)


class Aggregate:
    """The report's counters, fed one account at a time; no disk access here."""

    def __init__(self, scales: Scales, top: int = DEFAULT_TOP, addresses: bool = False) -> None:
        self.scales, self.top, self.addresses = scales, top, addresses
        self.logins = login_histogram(scales.inactive_days)
        self.no_password = Histogram("max_days", (), ("no password",))
        self.mailboxes = mailbox_histogram(scales.quota)
        self.ages = age_histogram(scales.mails_days)
        self.sizes = message_size_histogram()
        self.new = self.cur = self.max = 0
        self.largest: list[tuple[int, str]] = []  # a min-heap of at most ``top``

    def add(self, account: Account) -> None:
        total = 0
        for msg in account.messages:
            total += msg.size
            self.ages.add(self.scales.now - msg.mtime, msg.size)
            self.sizes.add(msg.size, msg.size)
            if msg.seen:
                self.cur += 1
            else:
                self.new += 1
        self.mailboxes.add(total, total)
        self.max = max(self.max, total)
        if account.last_login is None:
            self.no_password.add(0, total)
        else:
            days = (day_start(self.scales.now) - account.last_login) // DAY
            self.logins.add(days, total)
        self._keep_largest(total, account.address)

    def _keep_largest(self, size: int, address: str) -> None:
        if self.top <= 0:
            return
        item = (size, address if self.addresses else "")  # no address kept unless asked
        if len(self.largest) < self.top:
            heapq.heappush(self.largest, item)
        elif item > self.largest[0]:
            heapq.heapreplace(self.largest, item)

    def report(self) -> dict:
        s = self.scales
        return {
            "now": int(s.now),
            "unreadable": 0,
            "settings": {
                "quota_bytes": s.quota,
                "delete_mails_after": s.mails_days,
                "delete_inactive_users_after": s.inactive_days,
            },
            "accounts": {
                "count": sum(self.mailboxes.counts),
                "by_last_login": self.logins.rows(),
                "no_password": {
                    "count": self.no_password.counts[0],
                    "bytes": self.no_password.bytes[0],
                },
            },
            "mailboxes": self._mailboxes(),
            "messages": {
                "count": self.new + self.cur,
                "bytes": sum(self.ages.bytes),
                "new": self.new,
                "cur": self.cur,
                "by_age": self.ages.rows(),
                "by_size": self.sizes.rows(),
            },
        }

    def _mailboxes(self) -> dict:
        count, total = sum(self.mailboxes.counts), sum(self.mailboxes.bytes)
        return {
            "bytes": total,
            "mean_bytes": total // count if count else 0,
            "largest_bytes": self.max,
            "by_size": self.mailboxes.rows(),
            "largest": [self._top_row(size, addr) for size, addr in sorted(self.largest)[::-1]],
        }

    def _top_row(self, size: int, address: str) -> dict:
        return {"bytes": size, "address": address} if self.addresses else {"bytes": size}


def aggregate(
    accounts: Iterable[Account], scales: Scales, top: int = DEFAULT_TOP, addresses: bool = False
) -> dict:
    """The report (see the module's doc) of ``accounts``, each consumed once."""
    agg = Aggregate(scales, top, addresses)
    for account in accounts:
        agg.add(account)
    return agg.report()


def human(size: float) -> str:
    """Bytes in binary units, as Dovecot's quota is set, at most 8 characters up to 1000 TiB:
    1536 -> '1.5 KiB', 500 MiB -> '500 MiB'."""
    unit = "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024:
            break
        size, unit = size / 1024, bigger
    digits = 0 if unit == "B" or abs(size) >= 100 else 1
    text = f"{size:.{digits}f}".removesuffix(".0")
    return f"{text} {unit}"


def decimal(size: int) -> str:
    """A decimal size bound, as expiry's 200 kB: 10000 -> '10 kB'."""
    return f"{size // 1_000_000} MB" if size >= 1_000_000 else f"{size // 1000} kB"
