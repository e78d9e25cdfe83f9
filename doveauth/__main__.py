"""doveauth: Dovecot's passdb and userdb over the dict protocol; first login creates the account.

Usage: ``doveauth SOCKET_PATH CONFIG_PATH`` (run as the vmail user; Dovecot's auth-worker
connects with ``uri = proxy:SOCKET_PATH:auth``). One process: new passwords are hashed in a
few low-priority threads of it (see ``doveauth.hashing``), so nothing else needs to be started,
watched or stopped with it.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from chatmaild.daemon import DaemonArgs, parse_args, serve_until_signalled

from .auth import AuthDict, AuthSettings
from .hashing import Hasher

log = logging.getLogger("doveauth")
# Measured with bench/doveauth_bench.py figure 3 on 2 cores, alternating runs: lookup p99 during
# a sign-up burst 3.5-5.1 ms at 0.5 ms, against 4.4-9.0 ms at Python's default of 5 ms.
SWITCH_INTERVAL = 0.0005


def main(argv: list[str] | None = None) -> int:
    args = parse_args("doveauth", __doc__, argv)
    settings = AuthSettings.from_config(args.config)
    # The event loop answers every login; a thread that holds the GIL (a sign-up's file work,
    # a hashing thread between two C calls) makes it wait up to this long: 5 ms by default.
    sys.setswitchinterval(SWITCH_INTERVAL)
    return asyncio.run(_run(args, settings))


async def _run(args: DaemonArgs, settings: AuthSettings) -> int:
    with Hasher() as hasher:
        await hasher.warm_up()
        log.info("accounts under %s, %d hashing threads", settings.mailboxes_dir, hasher.workers)
        return await serve_until_signalled(args, AuthDict(settings, hasher))


if __name__ == "__main__":
    raise SystemExit(main())
