"""Benchmark filtermail's encryption check: armor, CRC-24, packet walk, and the MIME parse.

Why: the before-queue filter checks every message of the relay; Postfix gives it 100 s per
message, but anything slow in that path limits the whole site. The goal is 40 messages of 1 MB
a second on 2 cores with everything else in the path (SMTP, DKIM, reinjection), so the check of
one 1 MB message should take a few ms, and the whole MIME decision well under 25 ms.

How: in this process, no sockets and no root needed. Messages as clients send them: a PKESK
and one SEIPD, base64 in 64-column lines with the CRC-24 line, wrapped in RFC 3156's two parts
with CRLF line ends. CPU ms of this process, the median of a few runs.

1. ``openpgp.check_armored_message`` on armored messages of about 4 KiB, 1 MiB and 10 MiB; the
   CRC-24 of their packets alone (libgcrypt's, and the pure-Python fallback's); ``mime.parse``
   of the whole message, and ``parse`` + ``mime.check_encrypted``.
2. Hostile 1 MiB armor: one-octet partial body chunks (the packet walk's worst case), white
   space at every line end (the armor's per-line path), and a block of armor headers.

Run with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/filtermail_check_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable

from harness import report
from harness.report import ms, say, table
from harness.stats import cpu_timed

from filtermail import crc24, mime, openpgp

SIZES = (("4 KiB", 4 << 10), ("1 MiB", 1 << 20), ("10 MiB", 10 << 20))
GOAL_ARMOR_MS = 10.0  # check_armored_message of 1 MiB: "a few ms"
GOAL_MIME_MS = 25.0  # parse + check_encrypted of 1 MiB: 40 a second per core leaves half
GOAL_HOSTILE_MS = 50.0  # the worst 1 MiB armor still below one message's share of a core


def whole_packet(tag: int, body: bytes) -> bytes:
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def armor(data: bytes, line_end: str = "\n", headers: str = "") -> str:
    b64 = base64.b64encode(data).decode()
    crc = base64.b64encode(crc24.crc24(data).to_bytes(3, "big")).decode()
    lines = [openpgp.BEGIN, *headers.splitlines(), ""]
    lines += [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return line_end.join([*lines, "=" + crc, openpgp.END, ""])


def packets(armored_size: int) -> bytes:
    """A PKESK and a SEIPD whose armor is about ``armored_size`` characters."""
    seipd = b"\x01" + os.urandom(max(0, armored_size * 48 // 65 - 100))
    return whole_packet(1, b"\x03" + os.urandom(90)) + whole_packet(18, seipd)


def partial_chunks(armored_size: int) -> bytes:
    """A SEIPD whose 512-octet first chunk is followed by one-octet chunks (RFC 9580 allows)."""
    chunks = max(0, armored_size * 48 // 65 - 520) // 2
    return b"\xd2\xe9\x01" + os.urandom(511) + b"\xe0\x00" * chunks + b"\x01\x00"


def mail(armored: str) -> bytes:
    """The RFC 3156 message as Delta Chat sends it, CRLF line ends."""
    head = (
        "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: [...]\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        'boundary="b1"\r\nMIME-Version: 1.0\r\n\r\n'
        "--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        '--b1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
    )
    return (head + armored.replace("\n", "\r\n") + "--b1--\r\n").encode()


def cpu_ms(call: Callable[[], object], repeat: int) -> float:
    runs = sorted(cpu_timed(call)[0] for _ in range(repeat))
    return runs[(len(runs) - 1) // 2] * 1000


def outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except openpgp.NotEncrypted as exc:
        return f"refused: {exc}"
    return "passed"


def size_row(size: int, repeat: int, quick: bool) -> tuple[int, list[float]]:
    """Characters of armor, and CPU ms of each step on a message of about ``size`` of it."""
    data = packets(size)
    text = armor(data)
    message = mail(text)
    gcrypt = crc24.crc24_libgcrypt
    slow_runs = min(repeat, 3) if size <= (1 << 20) or not quick else 0
    return len(text), [
        cpu_ms(lambda: openpgp.check_armored_message(text, allow_headers=False), repeat),
        cpu_ms(lambda: gcrypt(data), repeat) if gcrypt else float("nan"),
        cpu_ms(lambda: crc24.crc24_python(data), slow_runs) if slow_runs else float("nan"),
        cpu_ms(lambda: mime.parse(message), repeat),
        cpu_ms(lambda: mime.check_encrypted(mime.parse(message), outgoing=True), repeat),
    ]


def figure_sizes(repeat: int, quick: bool) -> tuple[float, float]:
    say()
    say(f"Figure 1: CPU ms per message (median of {repeat} runs)")
    rows, armor_1m, mime_1m = [], 0.0, 0.0
    for name, size in SIZES:
        chars, cells = size_row(size, repeat, quick)
        if size == 1 << 20:
            armor_1m, mime_1m = cells[0], cells[-1]
        rows.append([name, f"{chars:,}", *map(ms, cells)])
    headers = ["armor", "chars", "check_armored", "crc libgcrypt", "crc Python", "mime.parse"]
    table([*headers, "parse+check_encrypted"], rows, left=1)
    used = "libgcrypt" if crc24.crc24_libgcrypt else "pure Python (libgcrypt not usable)"
    say(f"  crc24 in use: {used}")
    return armor_1m, mime_1m


def figure_hostile(repeat: int) -> float:
    size = 1 << 20
    text = armor(packets(size))
    cases = (
        ("one-octet partial body chunks", armor(partial_chunks(size))),
        ("white space at every line end", text.replace("\n", " \t\r\n")),
        ("a block of 'a: b' armor headers", armor(packets(size), headers="a: b\n" * 200_000)),
    )
    say()
    say(f"Figure 2: check_armored_message on hostile 1 MiB armor, CPU ms (median of {repeat})")
    rows, worst = [], 0.0
    for name, hostile in cases:

        def run(hostile: str = hostile) -> None:
            openpgp.check_armored_message(hostile, allow_headers=True)

        cpu = cpu_ms(lambda run=run: outcome(run), repeat)
        worst = max(worst, cpu)
        rows.append([name, f"{len(hostile):,}", ms(cpu), outcome(run)])
    table(["input", "chars", "ms", "outcome"], rows, left=1)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs of each case")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 7
    report.header("filtermail check benchmark", args.quick, dovecot=False)
    armor_1m, mime_1m = figure_sizes(repeat, args.quick)
    hostile = figure_hostile(repeat)
    report.goals(
        [
            (
                f"check_armored_message, 1 MiB < {GOAL_ARMOR_MS:g} ms",
                ms(armor_1m),
                armor_1m < GOAL_ARMOR_MS,
            ),
            (
                f"parse + check_encrypted, 1 MiB < {GOAL_MIME_MS:g} ms",
                ms(mime_1m),
                mime_1m < GOAL_MIME_MS,
            ),
            (
                f"worst hostile 1 MiB armor < {GOAL_HOSTILE_MS:g} ms",
                ms(hostile),
                hostile < GOAL_HOSTILE_MS,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
