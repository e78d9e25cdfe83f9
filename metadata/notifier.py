"""The push notifier: tells the push gateway that an account has new mail, once per device token.

Peer: the push gateway at ``url`` (HTTPS in production): an HTTP POST whose body is the token.
Its answer decides: 2xx, delivered; 410 Gone, the token is dead and ``on_dead_token(addr,
token)`` lets the metadata daemon drop it; anything else, or no answer within ``timeout``, a
retry with back-off, until ``give_up_after`` seconds after the notification was queued. Files:
the queue in ``queue_dir`` (``metadata.pushqueue``), written by this process only.

Why threads: ``requests`` blocks, and a few sender threads, each with its own
``requests.Session`` (one kept-alive HTTPS connection), send at once. They take due
notifications from one heap ordered by due time and sleep on a condition until the earliest
is due, so a waiting retry holds no thread, nothing busy-loops, and a slow gateway never
slows ``notify()``, which only writes the file and puts the item on the heap.

The retry count lives in memory: rewriting every file on every failed round of a gateway outage
(10,000 fsyncs a round) would cost more disk than the count is worth. The back-off is computed
from the age of a notification, not the count, so a restart does not start it again.

A notification for an (address, token) that is already waiting (not in flight) is merged into
it: one wake-up fetches all new mail, and during an outage the queue grows with the number of
devices, not of messages. One that is in flight is not merged: that request may come too early
for the new message.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from metadata.pushqueue import Item, load_queue, new_item, remove_item, write_item
from metadata.pushreport import GatewayReport

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
MAX_RETRY = 600.0
GIVE_UP_AFTER = 5 * 3600.0
REPORT_EVERY = 60.0
USER_AGENT = "chatmaild-notifier"

DONE, DEAD, RETRY = "done", "dead", "retry"


def next_try(
    age: float,
    *,
    first: float = FIRST_RETRY,
    cap: float = MAX_RETRY,
    give_up_after: float = GIVE_UP_AFTER,
) -> float | None:
    """Seconds to wait before trying again a notification that failed at ``age`` seconds since
    it was queued, or None: give up.

    The wait is the age, kept between ``first`` and ``cap``: tries at 0, f, 2f, 4f, 8f, ...
    seconds, doubling without a count. The last try falls on the deadline itself.
    """
    if age >= give_up_after:
        return None
    return min(max(first, age), cap, give_up_after - age)


def verdict(status: int) -> str:
    """What the gateway's HTTP status means for the notification.

    The gateway answers 200; any 2xx is taken as delivered too, since resending an accepted
    notification for five hours would be worse than trusting it. RFC 9110 §15.5.11: 410 Gone
    is permanent, so the token is dead. Redirects are not followed (a POST would become a GET):
    they and everything else are retried, and the status is logged for the operator.
    """
    if status == 410:
        return DEAD
    return DONE if 200 <= status < 300 else RETRY


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def describe(exc: Exception) -> str:
    """A short reason for a failed request, the same for the same cause (lines are grouped by
    it); never the request, so never a token."""
    import requests  # loaded already: a request failed

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "failed TLS"
    match = _ERRNO.search(str(exc))
    return f"unreachable ({match.group(0)})" if match else f"failed ({type(exc).__name__})"


class Notifier:
    """Sends push notifications from a crash-safe queue in ``queue_dir``; see the module's doc.

    ``on_dead_token`` is called in a sender thread; it must be thread-safe (an asyncio daemon
    hands the call to its loop, e.g. with ``asyncio.run_coroutine_threadsafe``).
    """

    def __init__(
        self,
        queue_dir: Path,
        url: str,
        on_dead_token: Callable[[str, str], None],
        *,
        senders: int = 4,
        give_up_after: float = GIVE_UP_AFTER,
        timeout: float = 10.0,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
        report_every: float = REPORT_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if senders < 1:
            raise ValueError("a notifier needs at least one sender")
        self.queue_dir = Path(queue_dir)
        self.url, self.on_dead_token = url, on_dead_token
        self.senders, self.timeout = senders, timeout
        self.give_up_after, self.first_retry, self.max_retry = give_up_after, first_retry, max_retry
        self.clock = clock  # unix time, for the age of notifications, which survives restarts
        self._report = GatewayReport(urlsplit(url).netloc or url, report_every, give_up_after)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Item]] = []  # (due on time.monotonic(), order, item)
        self._waiting: dict[tuple[str, str], Item] = {}  # the items on the heap, by key
        self._pending = 0  # waiting and in flight
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.queue_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def notify(self, addr: str, tokens: Iterable[str]) -> None:
        """Queue a notification for each device token of ``addr``; each is on disk when this
        returns. Raises OSError if one cannot be written (those before it stay queued)."""
        for token in tokens:
            token.encode("utf-8")  # the body must be UTF-8: a bad token fails here, not later
            with self._cond:
                if (addr, token) in self._waiting:
                    log.debug("notification for %s merged into a waiting one", addr)
                    continue
            item = new_item(addr, token, self.clock())
            write_item(self.queue_dir, item)
            if not self._queue(item, time.monotonic(), new=True):
                remove_item(self.queue_dir, item)  # one for this token came in meanwhile

    def pending(self) -> int:
        """Notifications not yet delivered or given up."""
        with self._cond:
            return self._pending

    def start(self) -> None:
        """Load what an earlier run left in the queue (everything due at once), and start the
        senders. Call it before other threads call notify()."""
        if self._threads:
            raise RuntimeError("the notifier is already started")
        self._load()
        for n in range(self.senders):
            thread = threading.Thread(target=self._run, name=f"notifier-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("push notifier started: %d notifications queued", self.pending())

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the senders; what is not delivered stays on disk for the next start. False if
        a sender is still in a request after ``timeout`` seconds (it ends on its own)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._report.flush(self.pending())
        log.info("push notifier stopped: %d notifications stay queued", self.pending())
        return not any(thread.is_alive() for thread in self._threads)

    def _load(self) -> None:
        with self._cond:  # notify() before start() has queued these already
            known = {entry[2].name for entry in self._heap}
        now, expired = self.clock(), 0
        for item in load_queue(self.queue_dir):
            if item.name in known:
                continue
            if now - item.queued >= self.give_up_after:
                expired += 1
                remove_item(self.queue_dir, item)
            elif not self._queue(item, time.monotonic(), new=True):
                remove_item(self.queue_dir, item)  # a second file for the same token
        if expired:
            self._report.gave_up("the notifier was not running", expired)

    def _queue(self, item: Item, due: float, *, new: bool) -> bool:
        """Put ``item`` on the heap; False if one for its key waits already (then ``item`` is
        not counted any more, and its file is the caller's to remove)."""
        with self._cond:
            if item.key in self._waiting:
                if not new:
                    self._pending -= 1
                return False
            if new:
                self._pending += 1
            self._waiting[item.key] = item
            heapq.heappush(self._heap, (due, next(self._order), item))
            self._cond.notify()
            return True

    def _next(self) -> Item | None:
        """The next due item; None when stopping or after report_every seconds of none."""
        with self._cond:
            deadline = time.monotonic() + self._report.every
            while not self._stopping:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    item = heapq.heappop(self._heap)[2]
                    del self._waiting[item.key]
                    if self._heap:  # another idle sender, if any, watches the next one
                        self._cond.notify()
                    return item
                if now >= deadline:
                    return None
                wake = min(deadline, self._heap[0][0]) if self._heap else deadline
                self._cond.wait(wake - now)
            return None

    def _run(self) -> None:
        session: requests.Session | None = None
        try:
            while not self._stopping:
                item = self._next()
                if item is not None:
                    if session is None:  # the first notification: requests loads only now
                        session = _new_session()
                    try:
                        self._attempt(session, item)
                    except Exception as exc:  # a bug must not end a sender, nor lose the item
                        log.error("push notifier: unexpected %s, will retry", type(exc).__name__)
                        self._failed(item, f"failed ({type(exc).__name__})")
                self._report.tick(self.pending())
        finally:
            if session is not None:
                session.close()

    def _attempt(self, session: requests.Session, item: Item) -> None:
        import requests

        item.attempts += 1
        try:
            with session.post(
                self.url,
                data=item.token.encode("utf-8"),
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                status = response.status_code
        except requests.RequestException as exc:
            self._failed(item, describe(exc))
            return
        outcome = verdict(status)
        if outcome == RETRY:
            self._failed(item, f"answered {status}")
            return
        if outcome == DEAD:
            self._dead(item)
        log.debug("notified %s (%s after %d tries)", item.addr, outcome, item.attempts)
        self._done(item)
        self._report.delivered()

    def _dead(self, item: Item) -> None:
        log.info("push gateway answered 410 for a device token: removing it from its account")
        try:
            self.on_dead_token(item.addr, item.token)
        except Exception as exc:
            # the item goes anyway: the next notification meets the same 410 and tries again
            log.error("could not remove a dead device token: %s", type(exc).__name__)

    def _done(self, item: Item) -> None:
        remove_item(self.queue_dir, item)
        with self._cond:
            self._pending -= 1

    def _failed(self, item: Item, reason: str) -> None:
        delay = next_try(
            self.clock() - item.queued,
            first=self.first_retry,
            cap=self.max_retry,
            give_up_after=self.give_up_after,
        )
        log.debug("notifying %s %s (try %d), next in %s s", item.addr, reason, item.attempts, delay)
        if delay is None:
            self._done(item)
        elif not self._queue(item, time.monotonic() + delay, new=False):
            remove_item(self.queue_dir, item)
        self._report.failed(reason, self.pending())
        if delay is None:
            self._report.gave_up(f"the push gateway kept failing (last: {reason})")


def _new_session() -> requests.Session:
    """A sender's HTTP session. requests (and its HTTP stack, about 6 MB) is imported here, on
    the first notification, so a relay whose users set no push tokens never loads it."""
    import requests

    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session
