"""chatmail-fsreport: what the relay stores, for its admin, read-only.

Why: expiry removes by age and size (``expire.rules``), and an admin choosing chatmail.ini's
``delete_*`` days or ``max_mailbox_size`` wants to see how many accounts and messages each
threshold concerns, and how full the mailboxes are, without touching anything. The last bounds
of the buckets are those settings, so an "older" bucket holds what ``chatmail-expire`` would
remove now as old mail or inactive accounts.

Usage: ``chatmail-fsreport CONFIG [--json] [--addresses N]``, by hand or from a monitoring job,
as root or the vmail user. It reads ``mailboxes_dir``, writes nothing, and prints the report on
stdout. The largest mailboxes are shown by size only: ``--addresses N`` names the N largest,
otherwise the report holds no address. A mailbox's size is the sum of its messages' sizes, as
Dovecot's quota counts it. The walk is ``expire.maildir``'s: streaming, never following a
symlink, skipping names under ``mailboxes_dir`` that are no account
(``chatmaild.mailbox.account_name``); memory stays flat. The counting is pure, in
``expire.tally``; this module holds the walk, the text and the command line.

Exit status: 0 done; 2 chatmail.ini or ``mailboxes_dir`` unusable (error on stderr).

``--json`` prints one object (bytes as integers, ``now`` in epoch seconds); its keys are stable:

- ``now``; ``unreadable``: mailboxes that could not be read in full (permissions).
- ``settings``: ``quota_bytes``, ``delete_mails_after``, ``delete_inactive_users_after``.
- ``accounts``: ``count``; ``by_last_login`` (buckets, ``max_days``: whole days since the day
  of the last login); ``no_password`` (``count``, ``bytes``).
- ``mailboxes``: ``bytes``, ``mean_bytes``, ``largest_bytes``; ``by_size`` (buckets,
  ``below_bytes``); ``largest``: ``[{"bytes": ...}]``, largest first, each with ``"address"``
  only under ``--addresses``.
- ``messages``: ``count``, ``bytes``, ``new``, ``cur`` (in ``new/``: no device has had it yet);
  ``by_age`` (buckets, ``max_days``); ``by_size`` (buckets, ``max_bytes``).

A bucket is ``{"label", <bound>, "count", "bytes"}``: ``max_*`` bounds are inclusive,
``below_*`` exclusive, and the last bucket's bound is null (everything beyond).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence

from chatmaild import config
from chatmaild.logs import setup_logging
from chatmaild.mailbox import account_name, last_login

from .maildir import Message, messages
from .tally import DEFAULT_TOP, Account, Scales, aggregate, human

log = logging.getLogger(__name__)

MAX_TOP = 1000  # --addresses N: the heap of the largest stays small


class Walk:
    """The accounts under ``mailboxes_dir``, one at a time, their messages read lazily.

    Opening raises OSError if ``mailboxes_dir`` cannot be read. A mailbox that cannot be read
    in full (a permission refused) is counted in ``unreadable`` and reported as far as read."""

    def __init__(self, mailboxes_dir: str) -> None:
        self.entries = os.scandir(mailboxes_dir)
        self.unreadable = 0

    def __iter__(self) -> Iterator[Account]:
        with self.entries as entries:
            for entry in entries:
                if not account_name(entry.name):
                    continue  # not an address: not ours to report (or a non-UTF-8 name)
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    login = last_login(entry.path)
                except OSError:
                    self.unreadable += 1
                    continue
                yield Account(entry.name, login, self._messages(entry.path))

    def _messages(self, home: str) -> Iterator[Message]:
        try:
            yield from messages(home)
        except OSError:
            self.unreadable += 1


def table(title: str, labels: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A title row of bucket labels and right-aligned rows beneath it."""
    names = [title, *(name for name, _ in rows)]
    first = max(map(len, names))
    widths = [
        max(len(labels[i]), *(len(cells[i]) for _, cells in rows)) for i in range(len(labels))
    ]
    lines = [[title, *labels], *([name, *cells] for name, cells in rows)]
    return "\n".join(
        line[0].ljust(first) + "".join(f"  {c:>{w}}" for c, w in zip(line[1:], widths, strict=True))
        for line in lines
    )


def bucket_table(title: str, noun: str, buckets: Sequence[dict]) -> str:
    return table(
        title,
        [b["label"] for b in buckets],
        [
            (f"  {noun}", [f"{b['count']:,}" for b in buckets]),
            ("  stored", [human(b["bytes"]) for b in buckets]),
        ],
    )


def render(report: dict) -> str:
    """The report as text for one screen: at most 18 lines of 80 columns (with the default
    five largest; ``--addresses N`` adds N lines)."""
    acc, box, msg = report["accounts"], report["mailboxes"], report["messages"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report["now"]))
    largest = box["largest"]
    parts = [
        f"chatmail-fsreport at {when}: {acc['count']:,} accounts, "
        f"{msg['count']:,} messages, {human(box['bytes'])}",
        bucket_table("last login", "accounts", acc["by_last_login"]),
        f"  no password file (a sign-up under way or failed): {acc['no_password']['count']:,}"
        f", holding {human(acc['no_password']['bytes'])}",
        bucket_table("mailbox size", "mailboxes", box["by_size"]),
        f"  mean {human(box['mean_bytes'])}, largest {human(box['largest_bytes'])}",
        bucket_table("message age", "messages", msg["by_age"]),
        bucket_table("message size", "messages", msg["by_size"]),
        f"  in new/ (no device has had them yet): {msg['new']:,}; in cur/: {msg['cur']:,}",
    ]
    if largest and "address" in largest[0]:
        parts.append("largest mailboxes:")
        parts.extend(f"  {human(row['bytes']):>10}  {row['address']}" for row in largest)
    elif largest:
        parts.append("largest mailboxes: " + ", ".join(human(row["bytes"]) for row in largest))
    if report["unreadable"]:
        parts.append(f"unreadable mailboxes (permissions): {report['unreadable']:,}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("chatmail-fsreport")
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        log.error("%s", exc)
        return 2
    scales = Scales(
        time.time(), cfg.max_mailbox_size, cfg.delete_mails_after, cfg.delete_inactive_users_after
    )
    try:
        walk = Walk(str(cfg.mailboxes_dir))
        report = aggregate(walk, scales, args.addresses or DEFAULT_TOP, args.addresses is not None)
    except OSError as exc:
        log.error("cannot read mailboxes_dir %s: %s", cfg.mailboxes_dir, exc.strerror or exc)
        return 2
    report["unreadable"] = walk.unreadable
    print(json.dumps(report) if args.json else render(report))
    return 0


def top_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_TOP:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TOP}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chatmail-fsreport", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="chatmail.ini")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--addresses", type=top_count, metavar="N", help="name the N largest mailboxes' accounts"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
