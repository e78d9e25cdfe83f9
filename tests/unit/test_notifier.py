"""The push notifier without a network: its retry schedule, the gateway's answers, the queue
files, and the grouped log lines."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from pathlib import Path

import pytest
from urllib3 import exceptions as http

from metadata.notifier import DEAD, DONE, RETRY, Notifier, describe, next_try, verdict
from metadata.pushqueue import (
    CORRUPT_DIR,
    CorruptItem,
    Item,
    decode_item,
    encode_item,
    load_queue,
    new_item,
    write_item,
)
from metadata.pushreport import GatewayReport, duration

TOKEN = "unit-secret-token-4c1f"
ADDR = "alice@example.org"


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage()
        assert "secret-token" not in text
        assert record.levelno < logging.INFO or "@" not in text


def tries(first: float, cap: float, give_up_after: float) -> list[float]:
    """The ages at which a notification that always fails is tried."""
    ages, age = [0.0], 0.0
    while (wait := next_try(age, first=first, cap=cap, give_up_after=give_up_after)) is not None:
        age += wait
        ages.append(age)
    return ages


def test_retries_double_from_the_first_wait():
    assert tries(1.0, 600.0, 20.0) == [0, 1, 2, 4, 8, 16, 20]


def test_retry_wait_is_capped():
    ages = tries(1.0, 600.0, 5 * 3600)
    waits = [b - a for a, b in itertools.pairwise(ages)]
    assert max(waits) == 600.0
    assert waits[:11] == [1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert len(ages) < 45  # 5 h of outage cost each notification few requests


def test_last_try_falls_on_the_deadline():
    assert next_try(3600 - 5, give_up_after=3600) == 5
    assert next_try(3600 - 1e-6, give_up_after=3600) == pytest.approx(1e-6)


def test_gives_up_at_the_deadline():
    assert next_try(3600, give_up_after=3600) is None
    assert next_try(7200, give_up_after=3600) is None


def test_clock_stepped_back_waits_the_first_retry():
    assert next_try(-300, first=1.0) == 1.0


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        *[(200, DONE), (204, DONE), (410, DEAD)],
        *[(code, RETRY) for code in (301, 302, 400, 404, 429, 500, 502, 503)],
    ],
)
def test_gateway_answers(status, outcome):
    assert verdict(status) == outcome


def test_failures_are_described_without_the_request():
    refused = http.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    assert describe(refused) == "unreachable ([Errno 111] Connection refused)"
    assert describe(http.ReadTimeoutError(None, "/notify", "read timed out")) == "timed out"
    assert describe(http.ConnectTimeoutError("connect timed out")) == "timed out"
    assert describe(http.SSLError("certificate verify failed")) == "failed TLS"
    assert describe(http.ProtocolError("odd")) == "failed (ProtocolError)"
    assert describe(ConnectionResetError(104, "Connection reset by peer")) == (
        "unreachable ([Errno 104] Connection reset by peer)"
    )


def test_item_file_round_trip():
    item = Item("a.json", ADDR, TOKEN + "-ü", 1700000000.25, 3)
    assert decode_item("a.json", encode_item(item)) == item


def test_new_items_have_unique_safe_names():
    names = {new_item(ADDR, "../../etc/passwd", 0.0).name for _ in range(100)}
    assert len(names) == 100
    assert all("/" not in name and name.endswith(".json") for name in names)


GOOD = {"addr": ADDR, "token": TOKEN, "queued": 1.0, "attempts": 0}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b"\xff\xfe",
        json.dumps({"addr": ADDR}).encode(),
        json.dumps({**GOOD, "token": ""}).encode(),
        json.dumps({**GOOD, "token": 5}).encode(),
        json.dumps({**GOOD, "queued": "yesterday"}).encode(),
        json.dumps({**GOOD, "queued": True}).encode(),
        b'{"addr": "a@x", "token": "t", "queued": NaN, "attempts": 0}',
        json.dumps({**GOOD, "attempts": -1}).encode(),
        json.dumps({**GOOD, "attempts": 1.5}).encode(),
    ],
)
def test_corrupt_item_files_are_refused(data):
    with pytest.raises(CorruptItem):
        decode_item("x.json", data)


def test_load_sets_corrupt_files_aside_and_cleans_up_after_a_crash(tmp_path, caplog):
    older = Item("older.json", ADDR, TOKEN + "1", 100.0)
    newer = Item("newer.json", ADDR, TOKEN + "2", 200.0)
    write_item(tmp_path, newer)
    write_item(tmp_path, older)
    (tmp_path / "bad.json").write_text(f'{{"addr": "{ADDR}", "token": "{TOKEN}"')
    (tmp_path / ".tmp.abc123").write_bytes(encode_item(older))  # a write cut off by a crash
    (tmp_path / "README").write_text("not ours")

    assert load_queue(tmp_path) == [older, newer]
    assert sorted(os.listdir(tmp_path)) == ["README", CORRUPT_DIR, "newer.json", "older.json"]
    assert os.listdir(tmp_path / CORRUPT_DIR) == ["bad.json"]
    lines = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.ERROR
    assert "bad.json" in lines[0].getMessage()
    assert load_queue(tmp_path) == [older, newer]  # set aside once: not met again


def notifier(tmp_path, **kwargs) -> Notifier:
    return Notifier(tmp_path / "queue", "http://127.0.0.1:9/notify", lambda a, t: None, **kwargs)


def test_notify_writes_each_item_before_it_returns(tmp_path):
    n = notifier(tmp_path, clock=lambda: 1234.5)
    asyncio.run(n.notify(ADDR, [TOKEN + "1", TOKEN + "2"]))
    files = sorted((tmp_path / "queue").iterdir())
    assert len(files) == 2
    assert n.pending() == 2
    items = sorted(decode_item(f.name, f.read_bytes()).token for f in files)
    assert items == [TOKEN + "1", TOKEN + "2"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert decode_item(files[0].name, files[0].read_bytes()).queued == 1234.5


def test_notify_merges_into_a_waiting_notification(tmp_path):
    n = notifier(tmp_path)

    async def three() -> None:
        await n.notify(ADDR, [TOKEN])
        await n.notify(ADDR, [TOKEN])
        await n.notify("bob@example.org", [TOKEN])

    asyncio.run(three())
    assert n.pending() == 2
    assert len(list((tmp_path / "queue").iterdir())) == 2


def test_notify_refuses_a_token_that_is_no_text(tmp_path):
    with pytest.raises(UnicodeEncodeError):
        asyncio.run(notifier(tmp_path).notify(ADDR, ["\udcff"]))
    assert list((tmp_path / "queue").iterdir()) == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_line_a_minute(caplog):
    clock = Clock()
    report = GatewayReport("push.example.org", 60.0, 3600.0, monotonic=clock)
    for n in range(1000):  # 100 s of failures, ten a second
        clock.now = n / 10
        report.failed("answered 503", pending=100)
        report.tick(pending=100)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "push gateway push.example.org answered 503; 100 notifications pending, "
        "retrying with back-off",
        "push gateway push.example.org answered 503 (600 times); 100 notifications pending, "
        "retrying with back-off",
    ]
    report.delivered()
    report.delivered()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["push gateway push.example.org takes notifications again"]


def test_give_ups_are_grouped_and_flushed(caplog):
    clock = Clock()
    report = GatewayReport("push.example.org", 60.0, 5 * 3600.0, monotonic=clock)
    for _ in range(3):
        report.gave_up("the push gateway kept failing (last: answered 503)")
    report.flush(pending=0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "gave up on 1 notification queued over 5 h ago: "
        "the push gateway kept failing (last: answered 503)",
        "gave up on 2 notifications queued over 5 h ago: "
        "the push gateway kept failing (last: answered 503) (2 times)",
    ]


def test_durations_read_naturally():
    assert [duration(s) for s in (0.5, 90, 18000)] == ["0.5 s", "1.5 min", "5 h"]


def test_count_pending_counts_queued_files_only(tmp_path):
    from metadata.pushqueue import count_pending

    assert count_pending(tmp_path / "absent") == 0
    for name in ("a.json", "b.json", ".tmp.xyz", "notes.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "c.json").write_text("x")
    assert count_pending(tmp_path) == 2


def test_an_idle_notifier_never_loads_its_http_client(tmp_path):
    """urllib3 comes in with the first notification (about 5 MB a relay without push saves)."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys; from pathlib import Path; from metadata.notifier import Notifier\n"
        "async def idle():\n"
        f"    n = Notifier(Path({str(tmp_path)!r}), 'http://127.0.0.1:9/', lambda a, t: None)\n"
        "    await n.start(); await asyncio.sleep(0.2); await n.stop(5)\n"
        "asyncio.run(idle()); print('urllib3' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert run.stdout.strip() == "False", run.stderr
