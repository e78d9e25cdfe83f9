"""Benchmark the dict protocol's worst cases: pathological lines and byte-at-a-time input.

Why: every dict daemon (doveauth, lastlogin, ...) parses what its socket receives on one event
loop; a line that takes long to parse, or input that costs quadratic time to buffer, stalls
every other request of that daemon.

How: in this process, no sockets and no root needed.

1. ``chatmaild.dictproto.parse_line`` on lines of exactly MAX_LINE bytes: each command letter
   followed by a filler repeated (escape bytes, TABs, invalid UTF-8, minus signs, NUL and
   newline), and on a line one byte too long. The median of a few runs of each; the worst
   filler of each command letter.
2. ``chatmaild.dictconn.DictConnection.data_received`` (with a fake transport and the default
   handler) fed a MAX_LINE-byte lookup line one byte at a time, as a slow or hostile client
   can send it; for reference the same in 4 KiB reads, and an overlong line one byte at a time
   (which is discarded). CPU seconds of this process.

Run with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/dictproto_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from harness import report
from harness.report import ms, say, table
from harness.stats import cpu_timed, timings

from chatmaild import dictproto as dp
from chatmaild.dictconn import DictConnection, DictHandler

COMMANDS = {
    "H": "hello",
    "L": "lookup",
    "I": "iterate",
    "B": "begin",
    "C": "commit",
    "D": "async commit",
    "R": "rollback",
    "S": "set",
    "U": "unset",
    "P": "append",
    "A": "atomic inc",
    "T": "timestamp",
}
FILLERS = (b"\x01", b"\x01t", b"\t", b"\xff", b"-", b"\x00\n")
HELLO = b"H3\t2\t0\t\tauth\n"

GOAL_PARSE_MS = 500.0  # what unit tests used to assert
GOAL_FEED_MS = 100.0  # quadratic buffering takes seconds; linear, a few tens of ms


# -- 1: parse_line on pathological lines ---------------------------------------------------------


def pathological_line(cmd: str, filler: bytes) -> bytes:
    return (cmd.encode() + filler * dp.MAX_LINE)[: dp.MAX_LINE]


def parse_outcome(line: bytes) -> str:
    """What parse_line made of the line: "parsed", "refused", or the unexpected exception."""
    try:
        dp.parse_line(line)
    except dp.DictProtocolError:
        return "refused"
    except Exception as exc:
        return f"raised {type(exc).__name__}: {exc}"
    return "parsed"


def parse_ms(line: bytes, repeat: int) -> float:
    """The median wall-clock time of parsing ``line`` (robust against a busy machine)."""
    runs = timings(lambda: parse_outcome(line), repeat)
    return runs[(len(runs) - 1) // 2] * 1000


def figure_parse(repeat: int) -> float:
    say()
    say(
        f"Figure 1: parse_line time in ms of {dp.MAX_LINE:,}-byte lines, a command letter "
        f"followed by a filler (median of {repeat} runs), and the worst filler per command"
    )
    rows, unexpected, worst = [], [], 0.0
    for cmd, name in COMMANDS.items():
        cells = []
        for filler in FILLERS:
            line = pathological_line(cmd, filler)
            cells.append(parse_ms(line, repeat))
            outcome = parse_outcome(line)
            if outcome.startswith("raised"):
                unexpected.append(f"{cmd} + {filler!r}: {outcome}")
        worst = max(worst, *cells)
        rows.append([f"{cmd} {name}", *map(ms, cells), ms(max(cells))])
    too_long = b"L" + b"\x01t" * (dp.MAX_LINE // 2)
    refused = parse_ms(too_long, repeat)
    worst = max(worst, refused)
    table(["command", *(repr(f)[1:] for f in FILLERS), "worst"], rows, left=1)
    say(f"  a line of MAX_LINE + 1 bytes (refused as too long): {ms(refused)} ms")
    for note in unexpected:
        say(f"  ! not a DictProtocolError: {note}")
    return worst


# -- 2: DictConnection fed byte by byte ----------------------------------------------------------


class FakeTransport:
    """Just enough of asyncio.Transport for DictConnection: counts what it writes."""

    def __init__(self) -> None:
        self.replies = 0

    def write(self, data: bytes) -> None:
        self.replies += data.count(b"\n")

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def feed(data: bytes, chunk: int) -> Callable[[], int]:
    """A run: a fresh connection gets HELLO, then ``data`` in pieces of ``chunk`` bytes."""

    def run() -> int:
        conn = DictConnection(DictHandler(), set())
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(HELLO)
        for i in range(0, len(data), chunk):
            conn.data_received(data[i : i + chunk])
        return transport.replies

    return run


def figure_feed(repeat: int) -> float:
    lookup = b"L" + b"k" * (dp.MAX_LINE - 1) + b"\n"
    overlong = b"L" + b"k" * (dp.MAX_LINE + 4095) + b"\nLshort\n"
    cases = (
        (f"{dp.MAX_LINE:,}-byte lookup line, 1 byte at a time", lookup, 1),
        (f"{dp.MAX_LINE:,}-byte lookup line, 4 KiB at a time", lookup, 4096),
        ("overlong line (MAX_LINE + 4 KiB) then a lookup, 1 byte at a time", overlong, 1),
    )
    say()
    say(
        f"Figure 2: DictConnection.data_received, CPU ms per line fed (median and worst of "
        f"{repeat} runs)"
    )
    rows, worst_single = [], 0.0
    for name, data, chunk in cases:
        runs = [cpu_timed(feed(data, chunk)) for _ in range(repeat)]
        cpu = sorted(seconds * 1000 for seconds, _replies in runs)
        if chunk == 1 and data is lookup:
            worst_single = cpu[-1]
        replies = ", ".join(sorted({str(r) for _seconds, r in runs}))
        rows.append([name, ms(cpu[(len(cpu) - 1) // 2]), ms(cpu[-1]), replies])
    table(["input", "median ms", "worst ms", "replies"], rows, left=1)
    return worst_single


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs of each case")
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else 5
    logging.disable(logging.WARNING)  # DictConnection logs each bad line it is fed
    report.header("dict protocol benchmark", args.quick, dovecot=False)
    parse = figure_parse(repeat)
    feed_ms = figure_feed(repeat)
    report.goals(
        [
            (
                f"worst parse_line time < {GOAL_PARSE_MS:g} ms",
                f"{parse:.2f} ms",
                parse < GOAL_PARSE_MS,
            ),
            (
                f"MAX_LINE line fed 1 byte at a time < {GOAL_FEED_MS:g} ms CPU",
                f"{feed_ms:.2f} ms",
                feed_ms < GOAL_FEED_MS,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
