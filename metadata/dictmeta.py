"""Dovecot's IMAP METADATA dictionary (``mail_attribute_dict = proxy:SOCKET:metadata``).

What Dovecot 2.3 sends (verified against 2.3.19): every key carries the mailbox GUID, and the
user comes with each lookup and transaction::

    priv/<guid>/devicetoken          SETMETADATA INBOX (/private/devicetoken "<token>")
    priv/<guid>/messagenew           set by the push hook (Lua) when LMTP delivered a message
    shared/<guid>/vendor/vendor.dovecot/pvt/server/vendor/deltachat/<name>
                                     GETMETADATA "" /shared/vendor/deltachat/<name> (server values)

A token set adds a device (Dovecot itself would overwrite the one value); a lookup of
``devicetoken`` answers the live tokens, space-separated. Unsetting ``devicetoken`` is
accepted and changes nothing: Dovecot does not say which device's token it means, and a
token no app sets again expires or dies at the gateway. ``messagenew`` queues one notification
per token. Server values are the relay's (``ServerValues``), the same for every user. Any other
key is not found, and a change of it fails the whole transaction, which then writes nothing.
The user must be an address of this relay (through ``chatmaild.mailbox``'s address→path
function); anything else fails with nothing written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.dictconn import DictHandler, Transaction
from chatmaild.mailbox import InvalidAddress, check_address

from .tokens import TokenStore

log = logging.getLogger(__name__)

SERVER_INFIX = "vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
DEVICETOKEN, MESSAGENEW = "devicetoken", "messagenew"


@dataclass(frozen=True)
class Key:
    """A dict key this service knows: a private one of INBOX, or a server value."""

    kind: str  # "private" or "server"
    name: str  # devicetoken, messagenew; or the server value's name


def parse_key(key: str) -> Key | None:
    """What ``key`` names, or None for keys this service does not serve."""
    scope, _, rest = key.partition("/")
    guid, _, name = rest.partition("/")
    if not guid or not name:
        return None
    if scope == "priv" and name in (DEVICETOKEN, MESSAGENEW):
        return Key("private", name)
    if scope == "shared" and name.startswith(SERVER_INFIX):
        value = name[len(SERVER_INFIX) :]
        return Key("server", value) if value and "/" not in value else None
    return None


class ServerValues:
    """The relay-wide values under /shared/vendor/deltachat/ (a name → producer of its value).

    A producer returns None when there is no value (e.g. the TURN socket is absent).
    """

    def __init__(self, producers: dict[str, Callable[[], str | None]]) -> None:
        self.producers = producers

    def get(self, name: str) -> str | None:
        producer = self.producers.get(name)
        return producer() if producer is not None else None


class MetadataDict(DictHandler):
    name = "metadata"

    def __init__(
        self,
        store: TokenStore,
        addr_domain: str,
        server: ServerValues,
        notify: Callable[[str, Sequence[str]], Awaitable[None]],
    ) -> None:
        self.store = store
        self.addr_domain = addr_domain
        self.server = server
        self.notify = notify

    def _user(self, user: str) -> str:
        """``user`` if it is an address of this relay; InvalidAddress otherwise."""
        _, domain = check_address(user)
        if domain != self.addr_domain:
            raise InvalidAddress("not an address of this relay")
        return user

    def lookup(self, req: dp.Lookup) -> dr.LookupResult | Awaitable[dr.LookupResult]:
        key = parse_key(req.key)
        if key is None:
            return dr.NOT_FOUND
        if key.kind == "server":
            return asyncio.to_thread(self._server_value, key.name)
        if key.name != DEVICETOKEN:
            return dr.NOT_FOUND
        try:
            tokens = self.store.tokens(self._user(req.user))
        except InvalidAddress:
            log.warning("metadata: lookup for an address that is not this relay's refused")
            return dr.Failed("not a user of this relay")
        return dr.Found(" ".join(tokens)) if tokens else dr.NOT_FOUND

    def _server_value(self, name: str) -> dr.LookupResult:
        value = self.server.get(name)
        return dr.NOT_FOUND if value is None else dr.Found(value)

    def iterate(self, req: dp.Iterate) -> dr.IterateResult | Awaitable[dr.IterateResult]:
        """GETMETADATA with DEPTH: the devicetoken key, if the prefix asked for covers it."""
        scope, _, rest = req.path.partition("/")
        guid = rest.partition("/")[0]
        key = f"priv/{guid}/{DEVICETOKEN}"
        if scope != "priv" or not guid or not key.startswith(req.path):
            return []
        try:
            tokens = self.store.tokens(self._user(req.user))
        except InvalidAddress:
            return dr.Failed("not a user of this relay")
        return [(key, " ".join(tokens))] if tokens else []

    async def commit(self, txn: Transaction) -> dr.CommitResult:
        """Apply the changes (in a worker thread: files and locks); a ``messagenew`` then
        queues the user's notifications, on disk before the reply, so none is lost.

        Most sets are an app setting its token again at start, which changes nothing
        (``TokenStore.is_current``): those are answered on the loop after reading the small
        file, as lookups are, without the thread hop.
        """
        if self._changes_nothing(txn):
            return None
        result, wake = await asyncio.to_thread(self._apply, txn)
        if wake is None:
            return result
        user, tokens = wake
        try:
            await self.notify(user, tokens)
        except OSError as exc:
            log.error("metadata: cannot queue the push notifications of %s: %s", user, exc)
            return dr.Failed("cannot queue")
        return result

    def _changes_nothing(self, txn: Transaction) -> bool:
        """Whether ``txn`` only sets tokens the user has already, stamped recently."""
        if not txn.changes:
            return False
        try:
            user = self._user(txn.user)
            for change in txn.changes:
                key = parse_key(getattr(change, "key", ""))
                if not isinstance(change, dp.Set) or key != Key("private", DEVICETOKEN):
                    return False
                if not self.store.is_current(user, change.value):
                    return False
        except (InvalidAddress, OSError):
            return False  # the full path answers these, with its log line
        return True

    def _apply(self, txn: Transaction) -> tuple[dr.CommitResult, tuple[str, list[str]] | None]:
        """The transaction's result, and the user and tokens to notify if it set messagenew."""
        # check every change and the user before touching anything: a bad transaction writes
        # nothing
        try:
            user = self._user(txn.user)
        except InvalidAddress:
            log.warning("metadata: change for an address that is not this relay's refused")
            return dr.Failed("not a user of this relay"), None
        work: list[tuple[str, str]] = []
        for change in txn.changes:
            key = parse_key(getattr(change, "key", ""))
            if key is None or key.kind != "private":
                log.warning("metadata: refused a change of a key this relay does not keep")
                return dr.Failed("unsupported key"), None
            if isinstance(change, dp.Set):
                work.append((key.name, change.value))
            elif not (isinstance(change, dp.Unset) and key.name == DEVICETOKEN):
                log.warning("metadata: refused a change that is not a set")
                return dr.Failed("unsupported change"), None
        wake = None
        try:
            for name, value in work:
                if name == DEVICETOKEN:
                    self.store.add(user, value)
                else:
                    wake = (user, self.store.tokens(user))
        except ValueError as exc:  # a token that cannot be one
            log.warning("metadata: refused a device token: %s", exc)
            return dr.Failed("not a device token"), None
        except FileNotFoundError:
            log.warning("metadata: no account %s", user)
            return dr.Failed("no such account"), None
        except OSError as exc:
            log.error("metadata: cannot store the tokens of %s: %s", user, exc)
            return dr.Failed("cannot store"), None
        return None, wake
