"""filtermail.wire: MAIL/RCPT arguments, and DATA read in pieces up to its end line, no further."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtermail.wire import BadPath, Path, parse_path, read_data, stuff, unstuff

# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "keyword", "path"),
    [
        ("FROM:<a@b.org>", "FROM:", Path("a@b.org", ())),
        (
            "from:<A@[127.0.0.1]> SIZE=12 BODY=8BITMIME",
            "FROM:",
            Path("A@[127.0.0.1]", ("SIZE=12", "BODY=8BITMIME")),
        ),
        ("FROM: <a@b.org>", "FROM:", Path("a@b.org", ())),
        ("FROM:<>", "FROM:", Path("", ())),
        (
            "FROM:<> RET=HDRS ENVID=x+2Bid SMTPUTF8",
            "FROM:",
            Path("", ("RET=HDRS", "ENVID=x+2Bid", "SMTPUTF8")),
        ),
        (
            "TO:<b@c.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@c.org",
            "TO:",
            Path("b@c.org", ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b@c.org")),
        ),
        ("TO:<@relay.org,@other.org:b@c.org>", "TO:", Path("b@c.org", ())),
        ('TO:<"a>b"@c.org>', "TO:", Path('"a>b"@c.org', ())),
        ("TO:b@c.org X-UNKNOWN", "TO:", Path("b@c.org", ("X-UNKNOWN",))),
        ("TO:<ü@c.org>", "TO:", Path("ü@c.org", ())),
    ],
)
def test_paths_and_all_their_parameters_are_read(arg, keyword, path):
    assert parse_path(arg, keyword) == path


@pytest.mark.parametrize(
    ("arg", "keyword", "why"),
    [
        (None, "FROM:", "expected"),
        ("TO:<a@b>", "FROM:", "expected"),
        ("FROM:<a@b", "FROM:", "closing"),
        ("TO:<a\x00b@c.org>", "TO:", "control"),
        ("TO:<a@c.org> X=\x01", "TO:", "control"),
        ("TO:<nodomain>", "TO:", "domain"),
        ("TO:<a@>", "TO:", "domain"),
        ("TO:<" + "a" * 300 + "@c.org>", "TO:", "too long"),
    ],
)
def test_bad_paths_are_refused(arg, keyword, why):
    with pytest.raises(BadPath, match=why):
        parse_path(arg, keyword)


def test_parameters_are_looked_up_by_keyword():
    path = parse_path("FROM:<a@b.org> size=10 SMTPUTF8", "FROM:")
    assert path.param("SIZE") == "10"
    assert path.param("SMTPUTF8") == ""
    assert path.param("BODY") is None
    assert parse_path("TO:<a@B.Org>", "TO:").domain == "b.org"


# -- dot-stuffing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n"),
        (b".first\r\n", b"..first\r\n"),
        (b"a.b\r\nx\n.y\r\n", b"a.b\r\nx\n.y\r\n"),  # only after CRLF
        (b"", b""),
    ],
)
def test_stuffing_round_trips(data, wire):
    assert stuff(data) == wire
    assert unstuff(wire) == data


# -- read_data -----------------------------------------------------------------------------------


async def _read(pieces: list[bytes], limit: int = 10**9) -> tuple[bytes, int, bytes]:
    reader = asyncio.StreamReader(limit=64)  # a small limit: every path of the reader is taken
    out = bytearray()
    task = asyncio.ensure_future(read_data(reader, out.extend, limit))
    for piece in pieces:
        reader.feed_data(piece)
        await asyncio.sleep(0)
    size = await asyncio.wait_for(task, 5)
    reader.feed_eof()
    return bytes(out), size, await reader.read()


def read(pieces: list[bytes], limit: int = 10**9) -> tuple[bytes, int, bytes]:
    return asyncio.run(_read(pieces, limit))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),
        (b"\r\n.x\r\n.\r\n", b"\r\nx\r\n"),
        (b"A: b\r\n\r\nbody\r\n.\r\n", b"A: b\r\n\r\nbody\r\n"),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n"),  # a bare LF ends no line
    ],
)
def test_data_ends_at_the_dot_line_even_at_once(wire, message):
    out, size, rest = read([wire + b"QUIT\r\n"])
    assert unstuff(out) == message
    assert size == len(out)
    assert rest == b"QUIT\r\n"


def test_data_over_the_limit_is_counted_and_dropped():
    body = b"x" * 1000 + b"\r\n"
    out, size, rest = read([body * 10, b".\r\n", b"NOOP\r\n"], limit=5000)
    assert size == 10 * len(body)
    assert len(out) <= 5000
    assert rest == b"NOOP\r\n"


def test_a_long_line_is_read_in_pieces():
    out, _, _ = read([b"y" * 100_000, b"\r\n.\r\n"])
    assert out == b"y" * 100_000 + b"\r\n"


messages = st.lists(
    st.sampled_from([b"", b".", b"..", b"a", b"\r", b"\n", b".a", b"\r\n"]), max_size=30
).map(lambda parts: b"\r\n".join(parts) + b"\r\n")


@given(messages, st.lists(st.integers(1, 20), max_size=20))
def test_any_message_survives_any_split(message, cuts):
    wire = stuff(message) + b".\r\nMAIL FROM:<a@b>\r\n"
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(wire[at : at + cut])
        at += cut
    pieces.append(wire[at:])
    out, _, rest = read([piece for piece in pieces if piece])
    assert unstuff(out) == message
    assert rest == b"MAIL FROM:<a@b>\r\n"
