"""What the benchmarks print, printed alike: header, tables, units, goals, warnings."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from .clients import LoadResult
from .env import checkout_dir, code_digest
from .probes import OtherLoad

OTHER_LOAD_WARNING = 0.10  # share of one core used by others above which figures are suspect


def say(text: str = "") -> None:
    print(text, flush=True)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def ms(value: float) -> str:
    return f"{value:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 0) -> None:
    """Columns right-aligned, except the first ``left`` ones."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  " + "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    say(line(headers).rstrip())
    for row in rows:
        say(line(row).rstrip())


def goals(rows: Sequence[tuple[str, str, bool]]) -> None:
    """(goal, what was measured, whether it is met) as a table headed "Goals"."""
    say()
    say("Goals")
    table(["goal", "measured", "result"], [[g, m, "HIT" if ok else "MISS"] for g, m, ok in rows])


def error_note(load: LoadResult, what: str) -> None:
    if load.errors:
        say(f"  ! {load.errors} {what} failed; first reply: {load.first_error!r}")


def header(title: str, quick: bool, dovecot: bool = True) -> None:
    """Title, machine, versions, which code runs and whether the checkout's code differs."""
    say(title + (" (--quick)" if quick else ""))
    machine = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    if dovecot:
        version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
        machine += f", Dovecot {version.strip()}"
    say(f"  {machine}")
    installed = code_digest()
    checkout = code_digest(checkout_dir())
    say(f"  daemons from {Path(sys.executable).parent}, code sha256 {installed}")
    if installed != checkout:
        say(f"  ! the checkout's code differs (sha256 {checkout}): reinstall to measure it")


@contextlib.contextmanager
def noting_other_load(other: OtherLoad) -> Iterator[None]:
    """Say after a figure if other processes used much CPU while it was measured."""
    mark = len(other.shares)
    yield
    share = other.since(mark)
    if share > OTHER_LOAD_WARNING:
        say(f"  ! other processes on this machine used up to {pct(share)} of a core meanwhile")


def other_load_summary(other: OtherLoad) -> None:
    shares = other.shares
    if not shares:
        return
    say()
    say(
        f"Other processes on this machine used {pct(sum(shares) / len(shares))} of a core on "
        f"average, {pct(max(shares))} at most, over the {len(shares)} measurement windows"
    )
