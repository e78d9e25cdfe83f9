"""The passdb/userdb dict Dovecot's auth-worker asks: answers logins, creates accounts.

Peer: Dovecot ``passdb``/``userdb`` with ``driver = dict`` and ``uri = proxy:<socket>:auth``.
Keys (``%E``-escaped by Dovecot, password and user separated by an unescaped ``"``)::

    shared/passdb/<user>              -> {"password": "{SCHEME}hash", "home": ..., "uid", "gid"}
    shared/passdb/<password>"<user>   -> the same, and creates the account if it is new
    shared/userdb/<user>              -> {"home": ..., "uid": ..., "gid": ...}
    iterate shared/userdb/            -> one key per account (doveadm user '*')

Dovecot verifies the password against the returned hash; this daemon never stores or logs a
cleartext password. Dovecot writes the key of a failed or timed-out lookup into its log, so the
relay's Dovecot asks the password-less key first; for an address that has no account but may
get one, that lookup answers ``noauthenticate`` and only then does Dovecot ask the creating key.
A wrong password for an existing account thus never leaves Dovecot, and passdb lookups never
answer a failure (``F``): problems are logged here and answered "not found".

Files written: ``<mailboxes_dir>/<addr>/password`` and ``enforceE2EEincoming``, as ``vmail``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.config import Config, settings_from
from chatmaild.dictconn import DictHandler
from chatmaild.mailbox import (
    PASSWORD_FILE,
    InvalidAddress,
    check_address,
    create_account,
    read_password,
    user_dir,
)

from .hashing import Hasher
from .policy import (
    CreationRules,
    ResourceLimits,
    address_refusal,
    measure,
    refusal,
    resource_refusal,
)

log = logging.getLogger(__name__)

PASSDB = "shared/passdb/"
USERDB = "shared/userdb/"
# Sign-ups waiting their turn; beyond this a new address is refused at once, so a flood of
# sign-ups cannot make Dovecot's lookups wait for seconds (or time out).
MAX_CREATIONS_IN_FLIGHT = 256
# Dovecot's dict client gives up after 30 s (and logs the key): answer well before. Seconds of
# time.monotonic() from the start of a sign-up until its account is committed (or not).
SIGNUP_DEADLINE = 10
# "noauthenticate": this passdb neither accepts nor refuses; Dovecot asks the next one.
NEXT_PASSDB = dr.Found('{"noauthenticate": "y"}')


@dataclass(frozen=True)
class AuthSettings:
    mailboxes_dir: Path
    vmail_user: str
    rules: CreationRules
    limits: ResourceLimits

    @classmethod
    def from_config(cls, cfg: Config) -> AuthSettings:
        return cls(
            cfg.mailboxes_dir,
            cfg.vmail_user,
            settings_from(CreationRules, cfg),
            settings_from(ResourceLimits, cfg),
        )


def split_passdb_key(key: str) -> tuple[str | None, str]:
    """Split ``<password>"<user>`` (both escaped with Dovecot's %E) into (password, user).

    %E puts a backslash before ``\\``, ``"`` and ``'``; the first unescaped ``"`` separates.
    A key without one is a bare user: (None, user).
    """
    if "\\" not in key:  # the usual case: nothing escaped
        password, sep, user = key.partition('"')
        return (password, user) if sep else (None, key)
    parts: list[list[str]] = [[]]
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            parts[-1].append(next(chars, ""))
        elif ch == '"' and len(parts) == 1:
            parts.append([])
        else:
            parts[-1].append(ch)
    if len(parts) == 1:
        return None, "".join(parts[0])
    return "".join(parts[0]), "".join(parts[1])


class AuthDict(DictHandler):
    name = "auth"
    lookup_failure = dr.NOT_FOUND  # never "F": Dovecot would log the key, maybe a password

    def __init__(self, settings: AuthSettings, hasher: Hasher) -> None:
        self.s = settings
        self.hasher = hasher
        self._creating = 0
        # Only as many sign-ups at work as there are hashing workers: more would not create
        # accounts faster, but their file writes would take the CPU from existing logins.
        self._working = asyncio.Semaphore(hasher.workers)

    def _userdb_fields(self, udir: Path) -> dict[str, str]:
        return {"home": str(udir), "uid": self.s.vmail_user, "gid": self.s.vmail_user}

    def _found(self, udir: Path, password_hash: str) -> dr.Found:
        # userdb_* fields let Dovecot's prefetch userdb skip a second lookup for this login
        fields = {f"userdb_{k}": v for k, v in self._userdb_fields(udir).items()}
        return dr.Found(json.dumps({"password": password_hash, **fields}))

    def lookup(self, req: dp.Lookup) -> dr.LookupResult | Awaitable[dr.LookupResult]:
        if req.key.startswith(PASSDB):
            return self._passdb(req.key[len(PASSDB) :])
        if req.key.startswith(USERDB):
            return self._userdb(req.key[len(USERDB) :])
        log.warning("auth: lookup outside passdb/ and userdb/ refused")
        return dr.NOT_FOUND

    def _account(self, addr: str) -> tuple[Path, str | None] | None:
        """(directory, stored hash or None) of a valid address; None (logged) if unusable."""
        try:
            udir = user_dir(self.s.mailboxes_dir, addr)
        except InvalidAddress as exc:
            log.warning("login refused: %s", exc)
            return None
        # A cached read of a small file costs microseconds, far less than a thread hand-off:
        # existing-account logins are answered inline, without leaving the event loop.
        try:
            return udir, read_password(udir)
        except OSError as exc:
            log.error("login refused: cannot read password of %s: %s", addr, exc)
            return None

    def _passdb(self, key: str) -> dr.LookupResult | Awaitable[dr.LookupResult]:
        password, addr = split_passdb_key(key)
        account = self._account(addr)
        if account is None:
            return dr.NOT_FOUND
        udir, stored = account
        if stored is not None:
            log.debug("passdb: account %s exists", addr)
            return self._found(udir, stored)
        if password is None:
            return self._may_be_created(addr)
        return self._start_creation(addr, udir, password)

    def _may_be_created(self, addr: str) -> dr.LookupResult:
        """The password-less lookup of an address without an account."""
        reason = address_refusal(self.s.rules, addr)
        if reason is not None:
            log.warning("account %s not created: %s", addr, reason)
            return dr.NOT_FOUND
        # Dovecot goes on to the next passdb, whose key carries the password to create it with
        return NEXT_PASSDB

    def _start_creation(
        self, addr: str, udir: Path, password: str
    ) -> dr.LookupResult | Awaitable[dr.LookupResult]:
        reason = refusal(self.s.rules, addr, password)
        if reason is not None:
            log.warning("account %s not created: %s", addr, reason)
            return dr.NOT_FOUND
        return self._create(addr, udir, password)

    def _userdb(self, addr: str) -> dr.LookupResult:
        account = self._account(addr)
        if account is None or account[1] is None:
            return dr.NOT_FOUND
        return dr.Found(json.dumps(self._userdb_fields(account[0])))

    async def _create(self, addr: str, udir: Path, password: str) -> dr.LookupResult:
        """Create the account, answering within SIGNUP_DEADLINE and never with a failure.

        Dovecot logs the key of a lookup that fails or times out, and this key holds the
        password: every problem is logged here and answered "not found".
        """
        # Counted here, inside the coroutine, with no await before the try: a coroutine that
        # is closed or cancelled before it starts never counts, so no slot can leak. Coroutines
        # of a burst start one after another, so the bound holds for a burst in one read too.
        if self._creating >= MAX_CREATIONS_IN_FLIGHT:
            log.warning("account %s not created: %d sign-ups in progress", addr, self._creating)
            return dr.NOT_FOUND
        self._creating += 1
        try:
            return await self._create_by(addr, udir, password, time.monotonic() + SIGNUP_DEADLINE)
        except TimeoutError:
            log.error("account %s not created: not done within %ss", addr, SIGNUP_DEADLINE)
        except Exception as exc:
            log.error("account %s not created: %s", addr, exc or type(exc).__name__)
        finally:
            self._creating -= 1
        return dr.NOT_FOUND

    async def _create_by(
        self, addr: str, udir: Path, password: str, deadline: float
    ) -> dr.LookupResult:
        """Create the account if that is committed by ``deadline`` (time.monotonic()).

        Waiting for a slot, measuring and hashing are abandoned at the deadline. The disk step
        is not: its thread would go on and might create the account after we answered "not
        found". It is awaited to the end instead, and refuses to commit past the deadline.
        """
        async with asyncio.timeout(deadline - time.monotonic()):
            await self._working.acquire()
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                hashed = await self._hash_if_resources_allow(addr, password)
            if hashed is None:
                return dr.NOT_FOUND
            stored, created = await asyncio.to_thread(create_account, udir, hashed, deadline)
        finally:
            self._working.release()
        if created:
            log.info("created account %s", addr)
        return self._found(udir, stored)

    async def _hash_if_resources_allow(self, addr: str, password: str) -> str | None:
        measured = await asyncio.to_thread(measure, self.s.limits)
        reason = resource_refusal(self.s.limits, measured)
        if reason is not None:
            log.warning("account %s not created: %s", addr, reason)
            return None
        return await self.hasher.hash(password)

    def iterate(self, req: dp.Iterate) -> dr.IterateResult | Awaitable[dr.IterateResult]:
        if not req.path.startswith(USERDB):
            return []
        return asyncio.to_thread(self._list_accounts)

    def _list_accounts(self) -> list[tuple[str, str]]:
        try:
            entries = list(os.scandir(self.s.mailboxes_dir))
        except FileNotFoundError:
            return []
        rows = []
        for entry in entries:
            try:
                check_address(entry.name)
            except InvalidAddress:
                continue
            if os.path.exists(os.path.join(entry.path, PASSWORD_FILE)):
                rows.append((USERDB + entry.name, ""))
        return sorted(rows)
