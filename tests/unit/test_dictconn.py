"""DictConnection driven in memory: reply order, failures and flow control, without sockets."""

from __future__ import annotations

import asyncio
import functools
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

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


# -- line splitting ------------------------------------------------------------------------------


class RecordingHandler(DictHandler):
    """Answers at once and records every request it was given, in order."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    def lookup(self, req: dp.Lookup):
        self.seen.append(req)
        return dr.Found(req.key[:8]) if req.key.startswith("k") else dr.NOT_FOUND

    def iterate(self, req: dp.Iterate):
        self.seen.append(req)
        return [("k", "v")]

    def commit(self, txn):
        self.seen.append((txn.tid, tuple(txn.changes)))
        return None


def feed(chunks: list[bytes]) -> tuple[list[object], bytes]:
    """What a fresh connection hands its handler, and writes, for ``chunks`` received in turn."""
    handler = RecordingHandler()
    conn = DictConnection(handler, set())
    transport = FakeTransport()
    conn.connection_made(transport)
    for chunk in chunks:
        conn.data_received(chunk)
    return handler.seen, bytes(transport.out)


def test_long_lines_received_one_byte_at_a_time_cost_linear_time():
    # four lines just under the limit (answered, not discarded): about 0.1 s of CPU when
    # linear; copying the buffer for each byte took about 1 s per line
    line = b"Lk" + b"x" * (dp.MAX_LINE - 3) + b"\n"
    data = line * 4
    pieces = [data[i : i + 1] for i in range(len(data))]
    started = time.process_time()
    seen, out = feed(pieces)
    took = time.process_time() - started
    assert out == b"Okxxxxxxx\n" * 4
    assert len(seen) == 4
    assert took < 1.0, f"{took:.2f} s of CPU for {len(data)} one-byte chunks"


@in_loop
async def test_overlong_line_is_answered_as_soon_as_it_passes_the_limit():
    conn, t = connect(SlowHandler())
    conn.data_received(b"L" + b"x" * (dp.MAX_LINE - 1))
    assert t.out == b""  # MAX_LINE bytes may still be a line
    conn.data_received(b"x")
    assert t.out == b"F\n"  # no need to hold the rest in memory until its newline
    conn.data_received(b"x" * 100)
    conn.data_received(b"x\nLok\n")
    assert t.out == b"F\nOOK\n"


_PIECES = [
    b"H3\t2\t0\t\ttest\n",
    b"H9\t0\t0\t\ttest\n",  # closes the connection
    b"Lkey\tuser\n",
    b"Lother\n",
    b"I0\t0\tshared/\n",
    b"B1\tu\n",
    b"S1\tk\tv\n",
    b"S1\tonly-key\n",
    b"C1\n",
    b"D1\n",
    b"R1\n",
    b"\r\n",
    b"\n",
    b"Zbad\n",
    b"\xff\xfe",
    b"\t",
    b"L" + b"x" * (dp.MAX_LINE - 1),  # a line of exactly MAX_LINE once its newline comes
    b"x" * 9000,
]
_streams = st.lists(st.sampled_from(_PIECES), max_size=30).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(_streams, st.lists(st.integers(min_value=0), max_size=40))
@example(b"L" + b"x" * dp.MAX_LINE + b"\nLkey\n", [dp.MAX_LINE // 2, dp.MAX_LINE + 1])
@example(b"L" + b"x" * (dp.MAX_LINE - 1) + b"\r\nLkey\n", [1, dp.MAX_LINE])
@example(b"B1\n" + b"S" * (dp.MAX_LINE + 5) + b"\nC1\n", [3, 70000])
@example(b"L" + b"x" * (dp.MAX_LINE + 100) + b"\nLkey\n", [dp.MAX_LINE + 10, dp.MAX_LINE + 50])
def test_any_split_into_chunks_answers_as_the_whole(data, cuts):
    assert feed(_split(data, cuts)) == feed([data])


# -- passing a connection on (chatmaild.handoff) -------------------------------------------------


class BufferedTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.unsent = 0

    def get_write_buffer_size(self) -> int:
        return self.unsent


def test_connection_is_settled_only_between_requests():
    conn = DictConnection(SlowHandler(), set())
    transport = BufferedTransport()
    conn.connection_made(transport)
    conn.data_received(b"H3\t2\t0\t\ttest\nLkey\tu\n")
    assert conn.settled()
    conn.data_received(b"Lhalf")  # half a request: its reply would be owed by the successor
    assert not conn.settled()
    conn.hold()
    assert not transport.paused  # reading on, to complete the line
    conn.data_received(b"\tu\n")
    assert conn.settled()
    conn.hold()
    assert transport.paused  # nothing more is read: the rest is for the next process
    transport.unsent = 10  # a reply still in the write buffer
    assert not conn.settled()


def test_connection_inside_an_overlong_line_is_not_settled():
    """Its tail would reach the next process as a request of its own, answered out of turn."""
    conn = DictConnection(SlowHandler(), set())
    transport = BufferedTransport()
    conn.connection_made(transport)
    conn.data_received(b"L" + b"k" * (dp.MAX_LINE + 10))
    assert transport.out == b"F\n"  # refused as soon as it passed the limit
    assert not conn.settled()
    conn.hold()
    assert not transport.paused  # reading on, to the end of the overlong line
    conn.data_received(b"kkkk\tu\n")
    assert conn.settled()
