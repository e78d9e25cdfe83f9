"""lastlogin: records the day of each account's last login, for expiry to find inactive ones.

Usage: ``lastlogin SOCKET_PATH CONFIG_PATH`` (run as the vmail user). Peer: Dovecot's
``last_login`` plugin (``last_login_dict = proxy:SOCKET_PATH:lastlogin``), which commits
``shared/last-login/<addr>`` = unix time after each login. The day is stored as the mtime of
``<mailboxes_dir>/<addr>/password``, rounded down to the day: the relay keeps no finer login
history. Unknown or malformed addresses get a failed commit and nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from chatmaild import dictproto as dp
from chatmaild.daemon import parse_args, serve_until_signalled
from chatmaild.dictserver import DictHandler, Transaction
from chatmaild.mailbox import PASSWORD_FILE, InvalidAddress, user_dir

log = logging.getLogger(__name__)

PREFIX = "shared/last-login/"
DAY = 86400


def login_day(value: str) -> int:
    """The start (UTC) of the day of unix time ``value``."""
    seconds = int(value)
    if seconds < 0:
        raise ValueError("negative time")
    return seconds - seconds % DAY


class LastLoginDict(DictHandler):
    name = "lastlogin"

    def __init__(self, mailboxes_dir: Path) -> None:
        self.mailboxes_dir = mailboxes_dir

    def commit(self, txn: Transaction):
        return asyncio.to_thread(self._apply, txn)

    def _apply(self, txn: Transaction) -> dp.Failed | None:
        # check every change before touching anything: a bad transaction writes nothing
        updates: list[tuple[Path, int]] = []
        for change in txn.changes:
            if not isinstance(change, dp.Set) or not change.key.startswith(PREFIX):
                log.warning("lastlogin: refused a change that is not a last-login set")
                return dp.Failed("only last-login sets are supported")
            try:
                udir = user_dir(self.mailboxes_dir, change.key[len(PREFIX) :])
                day = login_day(change.value)
            except (InvalidAddress, ValueError) as exc:
                log.warning("lastlogin: refused: %s", exc)
                return dp.Failed("bad last-login key or value")
            updates.append((udir / PASSWORD_FILE, day))
        for path, day in updates:
            try:
                if int(path.stat().st_mtime) != day:
                    os.utime(path, (day, day))
            except FileNotFoundError:
                log.warning("lastlogin: no account %s", path.parent.name)
                return dp.Failed("no such account")
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args("lastlogin", __doc__, argv)
    handler = LastLoginDict(args.config.mailboxes_dir)
    return asyncio.run(serve_until_signalled(args, handler))


if __name__ == "__main__":
    raise SystemExit(main())
