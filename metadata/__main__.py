"""chatmail-metadata: Dovecot's IMAP METADATA dictionary, and the push notifier behind it.

Usage: ``chatmail-metadata SOCKET_PATH CONFIG_PATH`` (run as the vmail user), the name and
arguments of existing relays' units. Peer: Dovecot, ``mail_attribute_dict =
proxy:SOCKET_PATH:metadata``. Device tokens live in each account's ``metadata.json``
(``metadata.tokens``); a delivery (the push hook's ``messagenew``) queues one notification per
token on disk (``notification_queue_dir``), which the notifier POSTs to ``notification_url``; all
on one asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chatmaild.daemon import DaemonArgs, parse_args, serve_until_signalled
from chatmaild.mailbox import InvalidAddress

from .dictmeta import MetadataDict, ServerValues
from .notifier import Notifier
from .tokens import TokenStore
from .values import producers

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("chatmail-metadata", __doc__, argv)
    cfg = args.config
    store = TokenStore(cfg.mailboxes_dir)

    def forget(addr: str, token: str) -> None:
        """The gateway says ``token`` is dead (410): the user's devices no longer have it."""
        with contextlib.suppress(InvalidAddress, FileNotFoundError):  # the account is gone
            store.remove(addr, token)

    cfg.notification_queue_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    notifier = Notifier(cfg.notification_queue_dir, cfg.notification_url, forget)
    handler = MetadataDict(store, cfg.addr_domain, ServerValues(producers(cfg)), notifier.notify)
    return asyncio.run(serve(args, handler, notifier))


async def serve(args: DaemonArgs, handler: MetadataDict, notifier: Notifier) -> int:
    """Send what an earlier run left queued, and serve the dict until signalled."""
    await notifier.start()
    try:
        return await serve_until_signalled(args, handler)
    finally:
        await notifier.stop(10)


if __name__ == "__main__":
    raise SystemExit(main())
