"""Log lines about the push gateway that an operator can act on, not one line per request.

During a gateway outage every notification fails again and again; a line for each try would
bury the news. The first failure is logged at once (WARNING), then at most one summary line
every ``every`` seconds, with counts by cause and how many notifications wait; one INFO line
says when the gateway takes notifications again. Notifications given up are lost: ERROR,
grouped the same way. Lines name the gateway's host, never a token or an address.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def counted(causes: Counter[str]) -> str:
    """``answered 503 (12 times), timed out``: each cause with its count, most frequent first."""
    return ", ".join(
        cause if n == 1 else f"{cause} ({n} times)" for cause, n in causes.most_common()
    )


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class GatewayReport:
    """Counts failures and give-ups of the senders (on the notifier's loop) and logs them
    grouped."""

    def __init__(
        self,
        gateway: str,
        every: float,
        give_up_after: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway, self.every, self.give_up_after = gateway, every, give_up_after
        self.monotonic = monotonic
        self._failures: Counter[str] = Counter()
        self._gave_up: Counter[str] = Counter()
        self._failing = False  # a failure line went out, and no delivery since
        self._failure_line = self._gave_up_line = -math.inf

    def failed(self, cause: str, pending: int) -> None:
        self._failures[cause] += 1
        line = self._failure_summary(pending)
        if line:
            log.warning("%s", line)

    def gave_up(self, cause: str, count: int = 1) -> None:
        self._gave_up[cause] += count
        line = self._gave_up_summary()
        if line:
            log.error("%s", line)

    def delivered(self) -> None:
        if not self._failing:
            return
        self._failing = False
        self._failures.clear()  # the failures in between did not last: no news
        log.info("push gateway %s takes notifications again", self.gateway)

    def tick(self, pending: int, force: bool = False) -> None:
        """Log what is counted and not logged yet, if ``every`` seconds have passed or ``force``."""
        warning = self._failure_summary(pending, force)
        error = self._gave_up_summary(force)
        if warning:
            log.warning("%s", warning)
        if error:
            log.error("%s", error)

    def flush(self, pending: int) -> None:
        self.tick(pending, force=True)

    def _failure_summary(self, pending: int, force: bool = False) -> str | None:
        now = self.monotonic()
        if not self._failures or (not force and now - self._failure_line < self.every):
            return None
        line = (
            f"push gateway {self.gateway} {counted(self._failures)}; "
            f"{plural(pending, 'notification')} pending, retrying with back-off"
        )
        self._failures.clear()
        self._failure_line, self._failing = now, True
        return line

    def _gave_up_summary(self, force: bool = False) -> str | None:
        now = self.monotonic()
        if not self._gave_up or (not force and now - self._gave_up_line < self.every):
            return None
        total = sum(self._gave_up.values())
        line = (
            f"gave up on {plural(total, 'notification')} queued over "
            f"{duration(self.give_up_after)} ago: {counted(self._gave_up)}"
        )
        self._gave_up.clear()
        self._gave_up_line = now
        return line
