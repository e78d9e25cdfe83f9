"""The passdb/userdb dict Dovecot's auth-worker asks: answers logins, creates accounts.

Peer: Dovecot ``passdb``/``userdb`` with ``driver = dict`` and ``uri = proxy:<socket>:auth``.
Keys (``%E``-escaped by Dovecot, password and user separated by an unescaped ``"``)::

    shared/passdb/<password>"<user>   -> {"password": "{SCHEME}hash", "home": ..., "uid", "gid"}
    shared/userdb/<user>              -> {"home": ..., "uid": ..., "gid": ...}
    iterate shared/userdb/            -> one key per account (doveadm user '*')

Dovecot verifies the password against the returned hash; this daemon never stores or logs a
cleartext password. A passdb lookup of an unknown address that the creation rules allow creates
the account (first login creates it). Files written: ``<mailboxes_dir>/<addr>/password`` and
``enforceE2EEincoming``, as the ``vmail`` user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from chatmaild import dictproto as dp
from chatmaild.config import Config
from chatmaild.dictserver import DictHandler
from chatmaild.mailbox import (
    PASSWORD_FILE,
    InvalidAddress,
    check_address,
    create_account,
    read_password,
    user_dir,
)

from .hashing import Hasher
from .policy import CreationRules, ResourceLimits, measure, refusal, resource_refusal

log = logging.getLogger(__name__)

PASSDB = "shared/passdb/"
USERDB = "shared/userdb/"


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
            CreationRules.from_config(cfg),
            ResourceLimits.from_config(cfg),
        )


def split_passdb_key(key: str) -> tuple[str, str]:
    """Split ``<password>"<user>`` (both escaped with Dovecot's %E) into (password, user).

    %E puts a backslash before ``\\``, ``"`` and ``'``; the first unescaped ``"`` separates.
    """
    parts: list[list[str]] = [[]]
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            parts[-1].append(next(chars, ""))
        elif ch == '"' and len(parts) == 1:
            parts.append([])
        else:
            parts[-1].append(ch)
    if len(parts) != 2:
        raise ValueError("no user in passdb key")
    return "".join(parts[0]), "".join(parts[1])


class AuthDict(DictHandler):
    name = "auth"

    def __init__(self, settings: AuthSettings, hasher: Hasher) -> None:
        self.s = settings
        self.hasher = hasher

    def _userdb_fields(self, udir: Path) -> dict[str, str]:
        return {"home": str(udir), "uid": self.s.vmail_user, "gid": self.s.vmail_user}

    def lookup(self, req: dp.Lookup):
        if req.key.startswith(PASSDB):
            return self._passdb(req.key[len(PASSDB) :])
        if req.key.startswith(USERDB):
            return self._userdb(req.key[len(USERDB) :])
        log.warning("auth: lookup outside passdb/ and userdb/ refused")
        return dp.NOT_FOUND

    def _passdb(self, key: str):
        try:
            password, addr = split_passdb_key(key)
            udir = user_dir(self.s.mailboxes_dir, addr)
        except ValueError as exc:  # InvalidAddress is a ValueError
            log.warning("login refused: %s", exc)
            return dp.NOT_FOUND
        # A cached read of a small file costs microseconds, far less than a thread hand-off:
        # existing-account logins are answered inline, without leaving the event loop.
        stored = read_password(udir)
        if stored is not None:
            return dp.Found(json.dumps({"password": stored, **self._userdb_fields(udir)}))
        return self._create(addr, udir, password)

    def _userdb(self, addr: str):
        try:
            udir = user_dir(self.s.mailboxes_dir, addr)
        except InvalidAddress:
            return dp.NOT_FOUND
        if not (udir / PASSWORD_FILE).exists():
            return dp.NOT_FOUND
        return dp.Found(json.dumps(self._userdb_fields(udir)))

    async def _create(self, addr: str, udir: Path, password: str) -> dp.LookupResult:
        reason = refusal(self.s.rules, addr, password)
        if reason is None:
            measured = await asyncio.to_thread(measure, self.s.limits)
            reason = resource_refusal(self.s.limits, measured)
        if reason is not None:
            log.warning("account %s not created: %s", addr, reason)
            return dp.NOT_FOUND
        hashed = await self.hasher.hash(password)
        try:
            stored, created = await asyncio.to_thread(create_account, udir, hashed)
        except OSError as exc:
            log.error("account %s not created: %s", addr, exc.strerror or exc)
            return dp.Failed("cannot create account")
        if created:
            log.info("created account %s", addr)
        return dp.Found(json.dumps({"password": stored, **self._userdb_fields(udir)}))

    def iterate(self, req: dp.Iterate):
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
