"""chatmail-quota-expire: make room in a mailbox that has reached its quota warning.

Usage: ``chatmail-quota-expire TARGET_MB MAILBOX_DIR``. Peer: Dovecot's ``quota_warning``
(``storage=90%% quota-warning <TARGET_MB> %h``, a ``script`` service run as vmail). It removes
the mailbox's oldest messages until the mailbox holds at most TARGET_MB megabytes (MiB, as
Dovecot's ``500M``), never one delivered in the last 24 hours, then removes ``maildirsize`` so
Dovecot counts the quota again at the next delivery (it would trust the old count for up to 15
minutes and keep refusing mail).

Dovecot runs it without waiting for it, with stdout closed: it writes nothing there, logs one
line to stderr (which Dovecot's log shows) only when something failed, and exits 0 unless its
arguments are wrong. ``chatmail-expire`` runs the same ``trim`` for every mailbox.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from chatmaild.mailbox import DAY

from .maildir import messages
from .rules import QUOTA_FILE, Limits, message_reason

if TYPE_CHECKING:
    from .sweep import Sweep

log = logging.getLogger(__name__)

MB = 1024 * 1024
WARNING, TARGET = 0.9, 0.7  # of the quota: when Dovecot's warning fires, and what is left after


def warning_level(target: int) -> int:
    """The size at which a mailbox trimmed to ``target`` has crossed the quota warning."""
    return int(target / TARGET * WARNING)


def trim(home: str, target: int, now: float, sweep: Sweep, limits: Limits | None = None) -> int:
    """Remove the oldest messages of the mailbox at ``home`` (none younger than a day) until it
    holds at most ``target`` bytes; the bytes it holds then. Messages ``limits`` expires anyway
    are not counted (they go, or went, already)."""
    kept = [m for m in messages(home) if limits is None or message_reason(m, limits) is None]
    total = sum(m.size for m in kept)
    if total <= target:
        return total
    removed = False
    for msg in sorted(kept, key=lambda m: m.mtime):
        if total <= target or msg.mtime > now - DAY:
            break
        if sweep.message(msg.path, msg.size, "quota"):
            total -= msg.size
            removed = True
    if removed and os.path.lexists(os.path.join(home, QUOTA_FILE)):
        sweep.file(os.path.join(home, QUOTA_FILE), "quota count")
    return total


def main(argv: list[str] | None = None) -> int:
    from .sweep import Sweep

    parser = argparse.ArgumentParser(prog="chatmail-quota-expire", description=__doc__)
    parser.add_argument("target_mb", type=int, help="megabytes to leave in the mailbox")
    parser.add_argument("mailbox_dir", help="the mailbox (Dovecot's %%h)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="chatmail-quota-expire: %(message)s")
    if args.target_mb < 0 or not os.path.isdir(args.mailbox_dir):
        log.error("no mailbox %s, or a negative target", args.mailbox_dir)
        return 2
    sweep = Sweep(remove=True)
    trim(args.mailbox_dir, args.target_mb * MB, time.time(), sweep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
