"""chatmail-expire: delete old and large mail and inactive accounts (daily, from cron or a timer).

Usage: ``chatmail-expire CONFIG [-v] [--remove]`` (as the vmail user or root). Without
``--remove`` it only reports what would go; ``-v`` lists each path. It always ends with a
summary on stdout that fits one screen; on a terminal it shows progress on stderr meanwhile.
What goes is decided in ``expire.rules``, the walk is ``expire.sweep``; every mailbox over its
quota warning is also trimmed as ``chatmail-quota-expire`` does.

Exit status, for an operator's monitoring: 0 done; 1 done, but some files could not be removed
(each logged); 2 chatmail.ini or ``mailboxes_dir`` unusable (nothing was done).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from chatmaild import config
from chatmaild.logs import setup_logging

from .quota import TARGET, WARNING
from .rules import Limits
from .sweep import Sweep, Totals, expire_mailboxes

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between progress lines on a terminal


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("chatmail-expire")
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        log.error("%s", exc)
        return 2
    began = time.monotonic()
    limits = Limits(
        time.time(),
        cfg.delete_mails_after,
        cfg.delete_large_after,
        cfg.delete_inactive_users_after,
    )
    sweep = Sweep(args.remove, listing if args.verbose else None)
    progress = Progress() if sys.stderr.isatty() else None
    try:
        totals = expire_mailboxes(
            str(cfg.mailboxes_dir),
            limits,
            sweep,
            trim_to=int(cfg.max_mailbox_size * TARGET),
            trim_over=trim_threshold(cfg.max_mailbox_size, cfg.max_message_size),
            progress=progress,
        )
    except OSError as exc:
        log.error("cannot read mailboxes_dir %s: %s", cfg.mailboxes_dir, exc.strerror or exc)
        return 2
    if progress is not None:
        print(file=sys.stderr)  # end the progress line
    print(summary(totals, args.remove, time.monotonic() - began))
    return 1 if totals.errors else 0


def trim_threshold(quota: int, largest_message: int) -> int:
    """The size over which a mailbox is trimmed: the quota warning's level, or less where the
    largest message would not fit any more. Dovecot's warning fires only on a delivery that
    succeeds, so a mailbox just under 90% with a message that does not fit would otherwise
    defer that message until mail expires (when max_message_size is over a tenth of the quota)."""
    return min(int(quota * WARNING), quota - largest_message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chatmail-expire", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="chatmail.ini")
    parser.add_argument("-v", "--verbose", action="store_true", help="list each path")
    parser.add_argument(
        "--remove", action="store_true", help="remove (without it: only report what would go)"
    )
    return parser.parse_args(argv)


def listing(what: str, path: str) -> None:
    print(f"{what}\t{path}")


class Progress:
    """A line on stderr, rewritten at most every PROGRESS_EVERY seconds."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, totals: Totals) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            print(
                f"\r{totals.accounts:,} accounts, {totals.messages_removed:,} messages",
                end="",
                file=sys.stderr,
                flush=True,
            )


def summary(totals: Totals, removed: bool, seconds: float) -> str:
    verb = "removed" if removed else "would remove (dry run: --remove to act)"
    reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(totals.reasons.items())) or "none"
    return "\n".join(
        [
            f"chatmail-expire: {totals.accounts:,} accounts scanned in {seconds:.1f} s; {verb}:",
            f"  accounts:  {totals.accounts_removed:,}",
            f"  messages:  {totals.messages_removed:,} ({reasons}), "
            f"{totals.bytes_removed / 1e6:,.1f} MB",
            f"  other files: {totals.files_removed:,} (tmp/ leftovers, Dovecot's, quota counts)",
            f"  errors:    {totals.errors:,}",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
