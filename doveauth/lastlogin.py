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
import time
from collections.abc import Awaitable
from pathlib import Path

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.daemon import parse_args, serve_until_signalled
from chatmaild.dictconn import DictHandler, Transaction
from chatmaild.mailbox import PASSWORD_FILE, InvalidAddress, login_day, user_dir

log = logging.getLogger(__name__)

PREFIX = "shared/last-login/"


class LastLoginDict(DictHandler):
    name = "lastlogin"

    def __init__(self, mailboxes_dir: Path) -> None:
        self.mailboxes_dir = mailboxes_dir

    def commit(self, txn: Transaction) -> Awaitable[dr.CommitResult]:
        return asyncio.to_thread(self._apply, txn)

    def _apply(self, txn: Transaction) -> dr.CommitResult:
        # check every change, and that every account exists, before touching anything:
        # a bad transaction writes nothing
        updates: list[tuple[Path, int, float]] = []
        now = time.time()
        for change in txn.changes:
            if not isinstance(change, dp.Set) or not change.key.startswith(PREFIX):
                log.warning("lastlogin: refused a change that is not a last-login set")
                return dr.Failed("only last-login sets are supported")
            try:
                path = user_dir(self.mailboxes_dir, change.key[len(PREFIX) :]) / PASSWORD_FILE
                day = login_day(change.value, now)
                mtime = path.stat().st_mtime
            except (InvalidAddress, ValueError) as exc:
                log.warning("lastlogin: refused: %s", exc)
                return dr.Failed("bad last-login key or value")
            except FileNotFoundError:
                log.warning("lastlogin: no account %s", path.parent.name)
                return dr.Failed("no such account")
            updates.append((path, day, mtime))
        try:
            for path, day, mtime in updates:
                if int(mtime) != day:
                    os.utime(path, (day, day))
        except OSError as exc:
            log.error("lastlogin: cannot record login of %s: %s", path.parent.name, exc)
            return dr.Failed("cannot record login")
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args("lastlogin", __doc__, argv)
    handler = LastLoginDict(args.config.mailboxes_dir)
    return asyncio.run(serve_until_signalled(args, handler))


if __name__ == "__main__":
    raise SystemExit(main())
