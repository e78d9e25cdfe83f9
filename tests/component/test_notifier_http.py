"""The push notifier against a real HTTP server on 127.0.0.1 standing in for the push gateway.

Each notifier runs on its own asyncio loop in a thread, as in the daemon; the test drives it
from outside through ``OnLoop``.

Back-off values are small (tens of milliseconds) so a test with retries takes well under a
second; the slow-gateway test takes about two.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers_env import free_port

from metadata.notifier import Notifier
from metadata.pushqueue import Item, write_item

ADDR = "alice@example.org"
FAST = {"first_retry": 0.02, "max_retry": 0.1}


class Gateway:
    """A push gateway: records each POST body as it arrives, and ``delay`` seconds later
    answers the next of ``codes``, or ``default`` when they are used up."""

    def __init__(self, codes: Iterable[int] = (), default: int = 200, port: int = 0) -> None:
        self.codes, self.default, self.delay = list(codes), default, 0.0
        self.received: list[bytes] = []
        self.delivered: list[bytes] = []  # the bodies answered with 200
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept-alive connections, as a real gateway has

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with gateway.lock:
                    gateway.received.append(body)
                time.sleep(gateway.delay)
                code = gateway.answer(body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, body: bytes) -> int:
        with self.lock:
            code = self.codes.pop(0) if self.codes else self.default
            if code == 200:
                self.delivered.append(body)
            return code

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateways():
    started: list[Gateway] = []

    def start(*args, **kwargs) -> Gateway:
        started.append(Gateway(*args, **kwargs))
        return started[-1]

    yield start
    for gateway in started:
        gateway.close()


class Dead:
    """on_dead_token: records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, addr: str, token: str) -> None:
        self.calls.append((addr, token))


class OnLoop:
    """A Notifier on its own event loop thread, with blocking calls for the test."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.started = self.stopped = False

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._call(self.notifier.start())
        self.started = True

    def notify(self, addr: str, tokens: Iterable[str]) -> None:
        self._call(self.notifier.notify(addr, list(tokens)))

    def pending(self) -> int:
        return self.notifier.pending()

    def stop(self, timeout: float = 10.0) -> bool:
        stopped = True
        if self.started and not self.stopped:
            stopped = self._call(self.notifier.stop(timeout), timeout + 5)
        self.stopped = True
        return stopped

    def close(self) -> None:
        self.stop(3)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def notifiers(tmp_path):
    """Makes notifiers on one queue directory, and stops them all after the test."""
    made: list[OnLoop] = []

    def make(url: str, dead: Callable[[str, str], None] | None = None, **kwargs) -> OnLoop:
        dead = dead or Dead()
        made.append(OnLoop(Notifier(tmp_path / "queue", url, dead, **{**FAST, **kwargs})))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


@pytest.fixture(autouse=True)
def _private_logs(caplog):
    """No test lets a token into the log, nor an address above debug level."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage()
        assert "secret-token" not in text
        assert record.levelno < logging.INFO or ADDR not in text


def tokens(n: int, prefix: str = "") -> list[str]:
    return [f"secret-token-{prefix}{i}" for i in range(n)]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def queue_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "queue").iterdir() if p.is_file())


def test_delivers_each_token_once_and_removes_its_file(gateways, notifiers, tmp_path):
    gateway = gateways()
    notifier = notifiers(gateway.url)
    notifier.start()
    sent = [*tokens(5), "secret-token-ü"]
    notifier.notify(ADDR, sent)
    wait_for(lambda: notifier.pending() == 0)
    assert sorted(gateway.received) == sorted(t.encode("utf-8") for t in sent)
    assert queue_files(tmp_path) == []


def test_gone_token_is_reported_dead_and_dropped(gateways, notifiers, tmp_path):
    gateway = gateways(default=410)
    dead = Dead()
    notifier = notifiers(gateway.url, dead)
    notifier.start()
    notifier.notify(ADDR, ["secret-token-gone"])
    wait_for(lambda: notifier.pending() == 0)
    assert dead.calls == [(ADDR, "secret-token-gone")]
    assert gateway.received == [b"secret-token-gone"]  # not retried
    assert queue_files(tmp_path) == []


def test_unavailable_gateway_is_retried(gateways, notifiers, tmp_path, caplog):
    gateway = gateways(codes=[503, 503])
    notifier = notifiers(gateway.url)
    notifier.start()
    notifier.notify(ADDR, ["secret-token-a"])
    wait_for(lambda: notifier.pending() == 0)
    assert gateway.received == [b"secret-token-a"] * 3
    assert gateway.delivered == [b"secret-token-a"]
    assert queue_files(tmp_path) == []
    assert "answered 503" in caplog.text
    assert "takes notifications again" in caplog.text


def test_gateway_down_then_up(gateways, notifiers, caplog):
    port = free_port()  # nothing listens yet: connections are refused
    notifier = notifiers(f"http://127.0.0.1:{port}/notify")
    notifier.start()
    notifier.notify(ADDR, tokens(3))
    wait_for(lambda: "unreachable" in caplog.text)
    gateway = gateways(port=port)
    wait_for(lambda: notifier.pending() == 0)
    assert sorted(gateway.delivered) == sorted(t.encode() for t in tokens(3))


def test_queue_survives_a_crash_before_sending(gateways, notifiers, tmp_path):
    gateway = gateways()
    crashed = notifiers(gateway.url)
    crashed.notify(ADDR, tokens(4))  # never started: as if killed right after notify()
    (tmp_path / "queue" / ".tmp.x1y2z3").write_text("half a file")
    assert len(queue_files(tmp_path)) == 5

    restarted = notifiers(gateway.url)
    restarted.start()
    wait_for(lambda: restarted.pending() == 0)
    assert Counter(gateway.received) == Counter(t.encode() for t in tokens(4))
    assert queue_files(tmp_path) == []


def test_queue_survives_a_stop_while_the_gateway_is_down(gateways, notifiers, tmp_path, caplog):
    down = notifiers(f"http://127.0.0.1:{free_port()}/notify")
    down.start()
    down.notify(ADDR, tokens(3))
    wait_for(lambda: "unreachable" in caplog.text)
    assert down.stop(timeout=3)
    assert len(queue_files(tmp_path)) == 3

    gateway = gateways()
    restarted = notifiers(gateway.url)
    restarted.start()
    wait_for(lambda: restarted.pending() == 0)
    assert Counter(gateway.received) == Counter(t.encode() for t in tokens(3))
    assert queue_files(tmp_path) == []


def test_restart_drops_expired_notifications_and_duplicates(gateways, notifiers, tmp_path, caplog):
    queue = tmp_path / "queue"
    queue.mkdir()
    now = time.time()
    write_item(queue, Item("old.json", ADDR, "secret-token-old", now - 7200))
    write_item(queue, Item("one.json", ADDR, "secret-token-twice", now - 60))
    write_item(queue, Item("two.json", ADDR, "secret-token-twice", now - 30))
    gateway = gateways()
    notifier = notifiers(gateway.url, give_up_after=3600)
    notifier.start()
    wait_for(lambda: notifier.pending() == 0)
    assert gateway.received == [b"secret-token-twice"]
    assert queue_files(tmp_path) == []
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert gave_up == [
        "gave up on 1 notification queued over 1 h ago: the notifier was not running"
    ]


def test_slow_gateway_does_not_hold_up_notify(gateways, notifiers):
    gateway = gateways()
    gateway.delay = 2.0
    notifier = notifiers(gateway.url, senders=4)
    notifier.start()
    notifier.notify(ADDR, ["secret-token-first"])
    wait_for(lambda: len(gateway.received) == 1, 1)  # a sender waits for the answer
    started = time.monotonic()
    notifier.notify(ADDR, tokens(3))
    assert time.monotonic() - started < 0.1
    # four senders at once: all four answered after about two seconds, not eight
    wait_for(lambda: notifier.pending() == 0, 3.5)
    assert len(gateway.delivered) == 4


def test_gives_up_at_the_deadline_with_one_line(gateways, notifiers, tmp_path, caplog):
    gateway = gateways(default=503)
    dead = Dead()
    notifier = notifiers(gateway.url, dead, give_up_after=0.3)
    notifier.start()
    notifier.notify(ADDR, ["secret-token-lost"])
    wait_for(lambda: notifier.pending() == 0)
    assert queue_files(tmp_path) == []
    assert dead.calls == []
    assert len(gateway.received) >= 3
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 1
    assert gave_up[0].levelno == logging.ERROR
    assert "answered 503" in gave_up[0].getMessage()


def test_outage_is_logged_without_a_line_per_try(gateways, notifiers, caplog):
    gateway = gateways(default=503)
    notifier = notifiers(gateway.url)
    notifier.start()
    notifier.notify(ADDR, tokens(20))
    wait_for(lambda: len(gateway.received) >= 100)
    notifier.stop(timeout=3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 2  # the first failure at once, the rest summed up at stop
    assert "20 notifications pending" in warnings[-1].getMessage()
