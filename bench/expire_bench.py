"""Benchmark chatmail-expire on a large synthetic mailbox tree, next to find(1) over the same tree.

Why: expiry walks every file of every account each day. Existing relays needed 45+ minutes for
millions of messages; the limit of such a walk is what ``find MAILDIR -type f -mtime +N`` does
on the same tree (readdir and one stat per file, in C). chatmail-expire must reach a good part
of that speed, grow linearly with the tree, and keep its memory flat.

How: a tree of ACCOUNTS accounts with FILES messages each (10 and 100,000 by default: a million
files; ``--scale`` shrinks it), made once in a temporary directory (removed at the end): each
account has a password file (its last login: most today, some months ago), ``cur/ new/ tmp/``,
and messages named as Dovecot names them (``,S=`` sizes), with mtimes spread over 40 days. The
page cache is warm for both (the tree was just written, and each arm runs once before it is
timed). Arms alternate (find, expire, expire, find). chatmail-expire runs as a dry run (it
decides everything and removes nothing, so every round sees the same tree), then once with
``--remove``. Its RSS is sampled every 20 ms. The tree is built at a tenth first, measured, then
grown to full size and measured again: the growth.

Run as root with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/expire_bench.py [--quick] [--scale F]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from harness import report
from harness.report import say, table

DAY = 86400
FILES = 10  # messages per account
ACCOUNTS = 100_000
MAILS_DAYS = 20


def build(root: Path, first: int, last: int, now: float) -> int:
    """Accounts ``first``..``last``-1 under ``root``; the number of files written."""
    written = 0
    for n in range(first, last):
        home = root / f"user{n:06d}@example.org"
        for sub in ("cur", "new", "tmp"):
            (home / sub).mkdir(parents=True)
        login = now - (120 * DAY if n % 20 == 0 else 0)  # one in twenty unused for months
        written += touch(home / "password", login)
        for m in range(FILES):
            where = "cur" if m % 3 else "new"
            name = f"{int(now) - m}.M{m}P{n}.bench,S={2000 + 97 * m},W={2100 + 97 * m}"
            written += touch(
                home / where / (name + (":2,S" if where == "cur" else "")),
                now - (n * 7 + m * 4) % 40 * DAY,
            )
    return written


def touch(path: Path, mtime: float) -> int:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.utime(path, (mtime, mtime))
    return 1


@dataclass
class Run:
    seconds: float
    peak_rss: int = 0


def timed(argv: list[str]) -> Run:
    """Run ``argv`` (output discarded) and sample its RSS every 20 ms."""
    began = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, ps = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    seconds = time.monotonic() - began
    if proc.returncode not in (0, 1):
        sys.exit(f"{argv[0]} failed: {proc.stderr.read().decode()}")
    return Run(seconds, peak)


def arms(root: Path, ini: Path) -> dict[str, list[Run]]:
    expire = str(Path(sys.executable).parent / "chatmail-expire")
    commands = {
        "find -type f -mtime +20": ["find", str(root), "-type", "f", "-mtime", f"+{MAILS_DAYS}"],
        "chatmail-expire (dry run)": [expire, str(ini)],
    }
    for argv in commands.values():  # warm-up
        timed(argv)
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for name in (*commands, *reversed(commands)):
        runs[name].append(timed(commands[name]))
    return runs


def measure(label: str, root: Path, ini: Path, files: int) -> tuple[float, float, int]:
    """One size: a table row per arm; (find's and expire's files/s, expire's peak RSS)."""
    runs = arms(root, ini)
    rows, rates = [], []
    for name, rs in runs.items():
        best = min(r.seconds for r in rs)
        rates.append(files / best)
        peak = max(r.peak_rss for r in rs)
        rows.append(
            [label, name, f"{files:,}", f"{best:.2f}", f"{files / best:,.0f}", report.mib(peak)]
        )
    table(["tree", "arm", "files", "s (best)", "files/s", "peak RSS"], rows)
    return rates[0], rates[1], max(r.peak_rss for r in runs["chatmail-expire (dry run)"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the tree")
    parser.add_argument("--scale", type=float, default=1.0, help="tree size factor")
    args = parser.parse_args()
    accounts = int(ACCOUNTS * args.scale * (0.1 if args.quick else 1))
    report.header("chatmail-expire benchmark", args.quick, dovecot=False)
    tmp = Path(tempfile.mkdtemp(prefix="expire-bench-", dir="/var/tmp"))
    try:
        root, ini, now = tmp / "mail", tmp / "chatmail.ini", time.time()
        ini.write_text(f"[params]\nmail_domain = example.org\nmailboxes_dir = {root}\n")
        small = accounts // 10
        began = time.monotonic()
        files = build(root, 0, small, now)
        say(
            f"  tree: {small:,} accounts, {files:,} files, made in {time.monotonic() - began:.0f} s"
        )
        say()
        f1, e1, rss1 = measure(f"{small:,} accounts", root, ini, files)
        files += build(root, small, accounts, now)
        f2, e2, rss2 = measure(f"{accounts:,} accounts", root, ini, files)
        removal = timed(
            [str(Path(sys.executable).parent / "chatmail-expire"), str(ini), "--remove"]
        )
        say(
            f"\n  chatmail-expire --remove on {accounts:,} accounts: {removal.seconds:.1f} s, "
            f"peak RSS {report.mib(removal.peak_rss)}"
        )
        report.goals(
            [
                (
                    "speed vs find >= 0.7",
                    f"{e2 / f2:.2f} ({e1 / f1:.2f} at a tenth)",
                    e2 / f2 >= 0.7,
                ),
                (
                    "linear growth (time per file, full / tenth)",
                    f"{(e1 / e2):.2f}",
                    e1 / e2 <= 1.25,
                ),
                (
                    "peak RSS < 50 MB",
                    f"{report.mib(max(rss1, rss2, removal.peak_rss))}",
                    max(rss1, rss2, removal.peak_rss) < 50e6,
                ),
            ]
        )
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
