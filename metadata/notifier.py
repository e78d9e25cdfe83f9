"""The push notifier: tells the push gateway that an account has new mail, once per device token.

Peer: the push gateway at ``url`` (HTTPS in production): an HTTP POST whose body is the token.
Its answer decides: 2xx, delivered; 410 Gone, the token is dead and ``on_dead_token(addr,
token)`` lets the metadata daemon drop it; anything else, or no answer within ``timeout``, a
retry with back-off, until ``give_up_after`` seconds after the notification was queued. Files:
the queue in ``queue_dir`` (``metadata.pushqueue``), written by this process only.

How: everything runs on the daemon's asyncio loop. A few sender tasks take due notifications
from one heap ordered by due time and wait on the loop until the earliest is due, so a waiting
retry holds nothing and nothing busy-loops. The HTTP client, ``urllib3``, blocks, so each
sender hands its POST to the notifier's own small thread pool (``_post``, the one call site);
they share one urllib3 connection pool, a kept-alive HTTPS connection per sender. Disk work
(queue files, the dead token's removal) goes through ``asyncio.to_thread``. A slow gateway
holds only the senders' threads, never ``notify()``, which writes the file and queues the item.

Why urllib3 and not requests (built on it): the notifier needs one POST and its status, and
requests would add about 4 MB (charset detection, certifi, its own layers) to a daemon meant
to stay small. Certificates are checked against the system's CA store, as other Debian
software does.

The retry count lives in memory: rewriting every file on every failed round of a gateway outage
(10,000 fsyncs a round) would cost more disk than the count is worth. The back-off is computed
from the age of a notification, not the count, so a restart does not start it again.

A notification for an (address, token) that is already waiting (not in flight) is merged into
it: one wake-up fetches all new mail, and during an outage the queue grows with the number of
devices, not of messages. One that is in flight is not merged: that request may come too early
for the new message.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from metadata.pushqueue import Item, load_queue, new_item, remove_item, write_item
from metadata.pushreport import GatewayReport

if TYPE_CHECKING:
    import urllib3

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
MAX_RETRY = 600.0
GIVE_UP_AFTER = 5 * 3600.0
REPORT_EVERY = 60.0
USER_AGENT = "chatmaild-notifier"
HEADERS = {"User-Agent": USER_AGENT, "Content-Type": "text/plain; charset=utf-8"}

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
    from urllib3 import exceptions  # loaded already: a request failed

    # NewConnectionError is a ConnectTimeoutError too (urllib3 2), though it is a refusal
    if isinstance(exc, exceptions.TimeoutError) and not isinstance(
        exc, exceptions.NewConnectionError
    ):
        return "timed out"
    if isinstance(exc, exceptions.SSLError):
        return "failed TLS"
    match = _ERRNO.search(str(exc))
    return f"unreachable ({match.group(0)})" if match else f"failed ({type(exc).__name__})"


class Notifier:
    """Sends push notifications from a crash-safe queue in ``queue_dir``; see the module's doc.

    Use it on one asyncio loop: ``await start()``, ``await notify(...)``, ``await stop()``.
    ``on_dead_token(addr, token)`` is called in a worker thread (it changes a file).
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
        self._heap: list[tuple[float, int, Item]] = []  # (due on time.monotonic(), order, item)
        self._waiting: dict[tuple[str, str], Item] = {}  # the items on the heap, by key
        self._pending = 0  # waiting and in flight
        self._order = itertools.count()
        self._wake = asyncio.Event()  # set when the heap changed: idle senders look again
        self._tasks: list[asyncio.Task] = []
        self._pool: ThreadPoolExecutor | None = None  # the POSTs' threads, started on demand
        self._http: urllib3.HTTPConnectionPool | None = None  # made by the first POST
        self._path = urlsplit(url)._replace(scheme="", netloc="").geturl() or "/"
        self._stopping = False
        self.queue_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def notify(self, addr: str, tokens: Iterable[str]) -> None:
        """Queue a notification for each device token of ``addr``; each is on disk when this
        returns. Raises OSError if one cannot be written (those before it stay queued)."""
        for token in tokens:
            token.encode("utf-8")  # the body must be UTF-8: a bad token fails here, not later
            if (addr, token) in self._waiting:
                log.debug("notification for %s merged into a waiting one", addr)
                continue
            item = new_item(addr, token, self.clock())
            await asyncio.to_thread(write_item, self.queue_dir, item)
            if not self._queue(item, time.monotonic(), new=True):
                # one for this token came in while the file was written
                await asyncio.to_thread(remove_item, self.queue_dir, item)

    def pending(self) -> int:
        """Notifications not yet delivered or given up."""
        return self._pending

    async def start(self) -> None:
        """Load what an earlier run left in the queue (everything due at once), and start the
        senders."""
        if self._tasks:
            raise RuntimeError("the notifier is already started")
        await self._load()
        self._pool = ThreadPoolExecutor(self.senders, thread_name_prefix="notifier")
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.senders)]
        log.info("push notifier started: %d notifications queued", self.pending())

    async def stop(self, timeout: float = 10.0) -> bool:
        """Stop the senders; what is not delivered stays on disk for the next start. False if
        a POST is still going after ``timeout`` seconds (its thread ends on its own; its
        notification stays queued, or is sent once more after the next start)."""
        self._stopping = True
        self._wake.set()
        busy: set[asyncio.Task] = set()
        if self._tasks:
            busy = (await asyncio.wait(self._tasks, timeout=timeout))[1]
        for task in busy:
            task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._report.flush(self.pending())
        log.info("push notifier stopped: %d notifications stay queued", self.pending())
        return not busy

    async def _load(self) -> None:
        """Queue what an earlier run left on disk; drop what is too old or there twice."""
        known = {entry[2].name for entry in self._heap}  # notify() before start() queued these
        now, expired, duplicates = self.clock(), [], []
        for item in await asyncio.to_thread(load_queue, self.queue_dir):
            if item.name in known:
                continue
            if now - item.queued >= self.give_up_after:
                expired.append(item)
            elif not self._queue(item, time.monotonic(), new=True):
                duplicates.append(item)  # a second file for the same token
        await asyncio.to_thread(_remove_all, self.queue_dir, expired + duplicates)
        if expired:
            self._report.gave_up("the notifier was not running", len(expired))

    def _queue(self, item: Item, due: float, *, new: bool) -> bool:
        """Put ``item`` on the heap; False if one for its key waits already (then ``item`` is
        not counted any more, and its file is the caller's to remove)."""
        if item.key in self._waiting:
            if not new:
                self._pending -= 1
            return False
        if new:
            self._pending += 1
        self._waiting[item.key] = item
        heapq.heappush(self._heap, (due, next(self._order), item))
        self._wake.set()
        return True

    async def _next(self) -> Item | None:
        """The next due item; None when stopping or after report_every seconds of none."""
        deadline = time.monotonic() + self._report.every
        while not self._stopping:
            now = time.monotonic()
            if self._heap and self._heap[0][0] <= now:
                item = heapq.heappop(self._heap)[2]
                del self._waiting[item.key]
                return item
            if now >= deadline:
                return None
            wake = min(deadline, self._heap[0][0]) if self._heap else deadline
            self._wake.clear()  # no await since the heap was looked at: no change is missed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wake - now)
        return None

    async def _run(self) -> None:
        while not self._stopping:
            item = await self._next()
            if item is not None:
                try:
                    await self._attempt(item)
                except Exception as exc:  # a bug must not end a sender, nor lose the item
                    log.error("push notifier: unexpected %s, will retry", type(exc).__name__)
                    await self._failed(item, f"failed ({type(exc).__name__})")
            self._report.tick(self.pending())

    async def _in_pool(self, func: Callable, *args: object):
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def _attempt(self, item: Item) -> None:
        item.attempts += 1
        status = await self._in_pool(self._post, item.token)
        if isinstance(status, str):
            await self._failed(item, status)
            return
        outcome = verdict(status)
        if outcome == RETRY:
            await self._failed(item, f"answered {status}")
            return
        if outcome == DEAD:
            await self._dead(item)
        log.debug("notified %s (%s after %d tries)", item.addr, outcome, item.attempts)
        await self._done(item)
        self._report.delivered()

    def _post(self, token: str) -> int | str:
        """(In a sender's thread.) The one request: the token is the body. The gateway's
        status, or why there is none (``describe``)."""
        if self._http is None:  # the first notification: urllib3 is loaded only now
            self._http = _connection_pool(self.url, self.senders, self.timeout)
        from urllib3.exceptions import HTTPError

        try:
            response = self._http.urlopen(
                "POST",
                self._path,
                body=token.encode("utf-8"),
                headers=HEADERS,
                retries=False,  # the notifier's own back-off decides
                redirect=False,
            )
        except (HTTPError, OSError) as exc:
            return describe(exc)
        return response.status

    async def _dead(self, item: Item) -> None:
        log.info("push gateway answered 410 for a device token: removing it from its account")
        try:
            await asyncio.to_thread(self.on_dead_token, item.addr, item.token)
        except Exception as exc:
            # the item goes anyway: the next notification meets the same 410 and tries again
            log.error("could not remove a dead device token: %s", type(exc).__name__)

    async def _done(self, item: Item) -> None:
        self._pending -= 1
        await asyncio.to_thread(remove_item, self.queue_dir, item)

    async def _failed(self, item: Item, reason: str) -> None:
        delay = next_try(
            self.clock() - item.queued,
            first=self.first_retry,
            cap=self.max_retry,
            give_up_after=self.give_up_after,
        )
        log.debug("notifying %s %s (try %d), next in %s s", item.addr, reason, item.attempts, delay)
        if delay is None:
            await self._done(item)
        elif not self._queue(item, time.monotonic() + delay, new=False):
            await asyncio.to_thread(remove_item, self.queue_dir, item)
        self._report.failed(reason, self.pending())
        if delay is None:
            self._report.gave_up(f"the push gateway kept failing (last: {reason})")


def _connection_pool(url: str, size: int, timeout: float) -> urllib3.HTTPConnectionPool:
    """The senders' connections to the gateway: kept alive, at most ``size``, TLS verified
    against the system's CA certificates (OpenSSL's default paths, or ``SSL_CERT_FILE``).
    urllib3 (about 5 MB with its HTTP stack) is imported here, on the first notification, so a
    relay whose users set no push tokens never loads it."""
    import urllib3

    return urllib3.connection_from_url(
        url, maxsize=size, block=False, timeout=urllib3.Timeout(total=timeout)
    )


def _remove_all(queue_dir: Path, items: list[Item]) -> None:
    for item in items:
        remove_item(queue_dir, item)
