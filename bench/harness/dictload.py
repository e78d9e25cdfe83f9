"""A Dovecot dict-protocol client for client processes, like a Dovecot auth-worker or imap.

Each connection says hello, then has one request outstanding at a time, as a blocking Dovecot
dict client does. Closed loop: the next request leaves when the reply came. Paced: requests
leave at a fixed rate and latency counts from each one's scheduled time, so a stalled server
counts in full (no coordinated omission); ``service`` keeps the latency from the actual send.
``fresh``: each request on a new connection (hello, request, reply, close), as Dovecot's imap
and lmtp processes use the metadata dict (one connection per IMAP command or delivery); its
latency counts from the connect. A request may be several lines (a transaction: B, S..., C)
of which only the last is answered. ``send_each`` sends a list of requests once each.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .clients import LoadResult, Window, WorkerResult, finished, run_in_client, sleep_until

# what Dovecot 2.3.19's dict client says first, for a dict named "auth" or "metadata"
HELLO = b"H3\t2\t0\t\tauth\n"
METADATA_HELLO = b"H3\t2\t0\t\tmetadata\n"


@dataclass(frozen=True)
class DictJob:
    """One client process's connections. ``rate`` 0 means closed loop (as fast as answered).

    ``requests`` is called once in the client process; what it returns gives the next request
    line (with its newline) each time it is called. It must be picklable (e.g. an instance of a
    module-level frozen dataclass with ``__call__``).
    """

    socket: str
    conns: int
    requests: Callable[[], Callable[[], bytes]]
    rate: float = 0.0  # requests/s over all of this job's connections
    hello: bytes = HELLO
    ok_prefix: bytes = b"O"  # a reply starting with this counts as a success
    fresh: bool = False  # a new connection for each request


class _DictConn:
    __slots__ = ("buf", "due", "sent_at", "sent_real", "sock")

    def __init__(self, path: str, hello: bytes) -> None:
        self.sock = _connect(path, hello)
        self.buf = b""
        self.due = 0.0  # when the next request is to be sent (paced mode)
        self.sent_at = 0.0  # when the outstanding request was due (paced) or sent
        self.sent_real = 0.0  # when it was sent

    def send(self, job: DictJob, sel: selectors.BaseSelector, request: bytes) -> None:
        if job.fresh:
            sel.unregister(self.sock)
            self.sock.close()
            self.sock = _connect(job.socket, job.hello)
            sel.register(self.sock, selectors.EVENT_READ, self)
        self.sock.send(request)


def _connect(path: str, hello: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(hello)
    sock.setblocking(False)
    return sock


def prepare_dict_job(job: DictJob) -> Callable[[Window], WorkerResult]:
    """For ``clients.run_clients``: connect now, drive the load when the window comes."""
    conns = [_DictConn(job.socket, job.hello) for _ in range(job.conns)]
    return lambda window: _drive_dict(job, conns, window)


def _drive_dict(job: DictJob, conns: list[_DictConn], window: Window) -> WorkerResult:
    result = WorkerResult()
    next_request = job.requests()
    paced = job.rate > 0
    interval = job.conns / job.rate if paced else 0.0
    # epoll rounds timeouts up to whole milliseconds; select() keeps microseconds, so a paced
    # request leaves on time rather than up to 1 ms late
    sel = selectors.SelectSelector() if paced else selectors.DefaultSelector()
    for i, conn in enumerate(conns):
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.due = window.start + i * interval / len(conns)
    idle = list(conns)  # connections without an outstanding request
    sleep_until(window.start)
    now = time.monotonic()
    while now < window.end:
        for conn in [c for c in idle if c.due <= now]:  # paced: due; closed loop: all at start
            idle.remove(conn)
            conn.sent_real = time.monotonic()
            conn.sent_at = conn.due if paced else conn.sent_real
            conn.send(job, sel, next_request())
        timeout = min((c.due for c in idle), default=window.end) - now
        for key, _ in sel.select(max(0.0, min(timeout, window.end - now))):
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise ConnectionError("the dict server closed a connection")
            line, newline, rest = (conn.buf + data).partition(b"\n")
            if not newline:
                conn.buf = line
                continue
            conn.buf = rest
            done = time.monotonic()
            ok = line.startswith(job.ok_prefix)
            error = line[:80].decode(errors="replace")
            service = done - conn.sent_real if paced else None
            result.record(done, window, ok, done - conn.sent_at, error, service)
            if paced:
                conn.due += interval
                idle.append(conn)
            else:
                conn.sent_at = done
                conn.send(job, sel, next_request())
        now = time.monotonic()
    for conn in conns:
        conn.sock.close()
    return result


@dataclass(frozen=True)
class SendEach:
    socket: str
    requests: tuple[bytes, ...]
    concurrency: int
    hello: bytes


def send_each(
    path: str,
    requests: Sequence[bytes],
    concurrency: int,
    hello: bytes = METADATA_HELLO,
    timeout: float = 600,
) -> LoadResult:
    """Each of ``requests`` once, on a new connection, ``concurrency`` at a time.

    From a client process, which ``timeout`` seconds bound; the results count from its start
    (``began``), a reply starting with "O" is a success.
    """
    return run_in_client(
        _run_send_each, SendEach(path, tuple(requests), concurrency, hello), timeout
    )


def _run_send_each(job: SendEach) -> LoadResult:
    return asyncio.run(_send_each(job))


async def _send_each(job: SendEach) -> LoadResult:
    todo = iter(job.requests)
    result = WorkerResult()
    start, cpu0 = time.monotonic(), time.process_time()
    window = Window(start, start, math.inf)

    async def connection() -> None:
        for request in todo:
            began = time.monotonic()
            try:
                reader, writer = await asyncio.open_unix_connection(job.socket)
                writer.write(job.hello + request)
                line = await reader.readline()
                writer.close()
                error = line[:80].decode(errors="replace")
            except OSError as exc:
                line, error = b"", f"{type(exc).__name__}: {exc}"
            done = time.monotonic()
            result.record(done, window, line.startswith(b"O"), done - began, error)

    await asyncio.gather(*(connection() for _ in range(job.concurrency)))
    return finished(result, start, cpu0)
