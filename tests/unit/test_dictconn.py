"""DictConnection driven in memory: reply order, failures and flow control, without sockets."""

from __future__ import annotations

import asyncio
import functools

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.dictconn import MAX_PENDING, DictConnection, DictHandler


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class SlowHandler(DictHandler):
    """Lookups of keys starting with 'slow' wait for the test to release them."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Future] = {}

    def lookup(self, req: dp.Lookup):
        if req.key == "boom":
            raise RuntimeError("handler bug")
        if req.key.startswith("slow"):
            gate = asyncio.get_running_loop().create_future()
            self.gates[req.key] = gate
            return gate
        return dr.Found(req.key.upper())


def connect(handler: DictHandler) -> tuple[DictConnection, FakeTransport]:
    conn = DictConnection(handler, set())
    transport = FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b"H3\t2\t0\t\ttest\n")
    return conn, transport


def in_loop(test):
    """Run an async test in a fresh event loop (no plugin needed)."""

    @functools.wraps(test)
    def run():
        asyncio.run(test())

    return run


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@in_loop
async def test_replies_keep_request_order_when_slow_ones_finish_last():
    handler = SlowHandler()
    conn, t = connect(handler)
    conn.data_received(b"Lslow1\nLa\nLslow2\nLb\n")
    assert t.out == b""  # the first reply is not ready: nothing may overtake it
    handler.gates["slow2"].set_result(dr.Found("two"))
    await settle()
    assert t.out == b""
    handler.gates["slow1"].set_result(dr.NOT_FOUND)
    await settle()
    assert t.out == b"N\nOA\nOtwo\nOB\n"


@in_loop
async def test_handler_errors_answer_failure_in_place():
    handler = SlowHandler()
    conn, t = connect(handler)
    conn.data_received(b"Lboom\nLslow\nLa\n")
    handler.gates["slow"].set_exception(RuntimeError("async bug"))
    await settle()
    assert t.out == b"Finternal error\nFinternal error\nOA\n"


@in_loop
async def test_cancelled_reply_still_answers_and_unblocks_the_rest():
    handler = SlowHandler()
    conn, t = connect(handler)
    conn.data_received(b"Lslow\nLa\n")
    handler.gates["slow"].cancel()
    await settle()
    assert t.out == b"Finternal error\nOA\n"


@in_loop
async def test_malformed_lines_without_reply_get_none_and_break_their_transaction():
    conn, t = connect(DictHandler())
    conn.data_received(b"B1\tu\nS1\tonly-key\nC1\n")
    assert t.out == b"F1\n"  # one reply, to the commit: the broken transaction fails
    conn.data_received(b"Snotanumber\tk\tv\nLx\n")
    assert t.out == b"F1\nN\n"


@in_loop
async def test_overlong_line_in_many_chunks_is_answered_once():
    conn, t = connect(SlowHandler())
    conn.data_received(b"L" + b"x" * 70000)
    conn.data_received(b"x" * 70000)
    conn.data_received(b"x" * 70000 + b"\nLok\n")
    assert t.out == b"F\nOOK\n"


@in_loop
async def test_bad_hello_closes_and_ignores_the_rest_of_the_chunk():
    handler = SlowHandler()
    conn = DictConnection(handler, set())
    t = FakeTransport()
    conn.connection_made(t)
    conn.data_received(b"H9\t0\t0\t\tauth\nLa\n")
    assert t.closed and t.out == b""


@in_loop
async def test_many_pending_replies_pause_reading_until_drained():
    handler = SlowHandler()
    conn, t = connect(handler)
    conn.data_received(b"Lslow\n" + b"La\n" * (MAX_PENDING + 10))
    assert t.paused
    handler.gates["slow"].set_result(dr.NOT_FOUND)
    await settle()
    assert not t.paused
    assert t.out.count(b"\n") == MAX_PENDING + 11


@in_loop
async def test_connection_lost_with_pending_replies_writes_nothing():
    handler = SlowHandler()
    conn, t = connect(handler)
    conn.data_received(b"Lslow\nLa\n")
    conn.connection_lost(None)
    handler.gates["slow"].set_result(dr.NOT_FOUND)
    await settle()
    assert t.out == b""
