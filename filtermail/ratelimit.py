"""How many messages one account may send: the generic cell rate algorithm (GCRA), in memory.

filtermail (outgoing) asks once per MAIL FROM, keyed on the envelope sender. A sender may send
``burst`` messages at once, then one every ``60 / per_minute`` seconds. GCRA keeps a single
number per sender, the theoretical arrival time (TAT) of its next message: a message at ``now``
passes if ``TAT - now`` stays within the burst tolerance, and then moves the TAT on by one
emission interval. A sender whose TAT has passed is indistinguishable from a new one, so its
entry can go: the table holds only senders active within the last ``burst`` intervals, and at
most ``max_entries`` of them (the least recently seen go first when that cap is reached: such a
sender gets a fresh burst, the price of bounded memory under a flood of distinct senders).

The clock is passed in, so the schedule is tested without waiting. Nothing is written to disk: a
restart forgets the counts, as it forgets connections.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_ENTRIES = 100_000


class RateLimiter:
    """``allow(key)`` at most ``burst`` times at once, then ``per_minute`` times a minute."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if per_minute < 1 or burst < 1 or max_entries < 1:
            raise ValueError("per_minute, burst and max_entries must be at least 1")
        self.interval = 60.0 / per_minute
        # a message passes while TAT - now <= tolerance: with all the burst's TATs stacked at
        # one instant, the burst-th message sees (burst - 1) intervals, the next one burst.
        self.tolerance = (burst - 1) * self.interval
        self.clock = clock
        self.max_entries = max_entries
        self._tat: OrderedDict[str, float] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._tat)

    def allow(self, key: str) -> bool:
        """True if ``key`` may send one more message now (and count it); False to refuse."""
        now = self.clock()
        self._forget_expired(now)
        tat = max(self._tat.get(key, now), now)
        allowed = tat - now <= self.tolerance
        if allowed:
            self._tat[key] = tat + self.interval
        if key in self._tat:
            self._tat.move_to_end(key)
            while len(self._tat) > self.max_entries:
                self._tat.popitem(last=False)
        return allowed

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may send again (0 if it may now); counts nothing."""
        now = self.clock()
        tat = self._tat.get(key, now)
        return max(0.0, tat - self.tolerance - now)

    def _forget_expired(self, now: float) -> None:
        # Entries are in order of last use, and a TAT is at most burst intervals past the
        # moment it was last set: whatever is expired tends to sit at the front. Popping there
        # costs O(1) per entry ever added; an expired entry behind a live one waits its turn.
        while self._tat:
            key, tat = next(iter(self._tat.items()))
            if tat > now:
                return
            del self._tat[key]
