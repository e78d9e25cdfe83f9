"""The push tokens of an account: ``<mailboxes_dir>/<addr>/metadata.json``, as existing relays
keep them, so operators switch without migrating.

A chat app registers an opaque device token with IMAP ``SETMETADATA INBOX
(/private/devicetoken "<token>")``; a user may have several devices, so each SETMETADATA adds a
token (Dovecot itself would overwrite). The file holds ``{"devicetoken": {token: unix time it
was last set}}``; older relays wrote ``{"devicetoken": [token, ...]}``, which reads as set now.
Any other keys in the file are kept as they are.

A token set again less than a day after its stamp keeps that stamp and the file is not touched:
apps set their token on every start, and a rewrite for each (a lock, two fsyncs, a rename: about
1 ms, against 20 µs for a read) would buy nothing but a finer stamp on a 90-day expiry. Whether
a set changes anything is first checked without the lock, and again under it.

A token is dropped when it is older than 90 days (the app sets it again when it runs) or stamped
in the future (a clock gone wrong would otherwise keep it forever), and when the push gateway
says it is dead (410). Changes hold a lock beside the file (``filelock``) and replace the file
atomically, so a SETMETADATA, a 410 from a notifier thread and a successor process during a
restart never lose each other's change, and a crash never leaves half a file.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from chatmaild.mailbox import atomic_write, user_dir

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"
LOCK_FILE = "metadata.json.lock"
KEY = "devicetoken"
MAX_AGE = 90 * 86400  # seconds a token lives without being set again
FUTURE_SLACK = 60  # seconds a stamp may lie ahead (clock skew between processes)
MAX_TOKEN = 4096  # bytes; real tokens are a few hundred
MAX_TOKENS = 64  # per account; the oldest go first
RESTAMP_AFTER = 86400  # seconds after which setting a stored token again renews its stamp


def is_valid(stamp: float, now: float) -> bool:
    """Whether a token set at unix time ``stamp`` still counts at ``now``."""
    return now - MAX_AGE < stamp < now + FUTURE_SLACK


def parse(data: bytes, now: float) -> tuple[dict, dict[str, float]]:
    """The whole file and its live tokens (token → time set), whatever shape the file has.

    Never raises: a file that is not a JSON object holds no tokens (and is replaced on the
    next change); a legacy list counts as set at ``now``; bad entries are skipped.
    """
    try:
        whole = json.loads(data)
    except (ValueError, RecursionError):
        return {}, {}
    if not isinstance(whole, dict):
        return {}, {}
    stored = whole.get(KEY)
    if isinstance(stored, list):
        stored = {token: now for token in stored if isinstance(token, str)}
    if not isinstance(stored, dict):
        return whole, {}
    tokens = {
        token: float(stamp)
        for token, stamp in stored.items()
        if isinstance(token, str)
        and isinstance(stamp, int | float)
        and not isinstance(stamp, bool)
        and is_valid(stamp, now)
    }
    return whole, tokens


def encode(whole: dict, tokens: dict[str, float]) -> bytes:
    return json.dumps({**whole, KEY: {t: int(s) for t, s in tokens.items()}}).encode()


def check_token(token: str) -> None:
    """Raise ValueError for what cannot be a device token (it ends up in an HTTP body)."""
    if not token or len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN:
        raise ValueError("empty or overlong device token")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("device token with spaces or control characters")


def _current(tokens: dict[str, float], token: str, now: float) -> bool:
    return now - tokens.get(token, -math.inf) < RESTAMP_AFTER


class TokenStore:
    """The device tokens of the accounts under ``mailboxes_dir``.

    Addresses go through ``chatmaild.mailbox.user_dir`` (InvalidAddress for anything unsafe);
    an account whose directory does not exist has no tokens and gets none (FileNotFoundError).
    """

    def __init__(self, mailboxes_dir: Path) -> None:
        self.mailboxes_dir = mailboxes_dir

    def tokens(self, addr: str, now: float | None = None) -> list[str]:
        """The live tokens of ``addr``, oldest first; none if it has no file."""
        path = user_dir(self.mailboxes_dir, addr) / METADATA_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        _, tokens = parse(data, time.time() if now is None else now)
        return sorted(tokens, key=tokens.__getitem__)

    def is_current(self, addr: str, token: str, now: float | None = None) -> bool:
        """Whether setting ``token`` for ``addr`` now would change nothing (see the module's
        doc); reads the file, takes no lock, writes nothing."""
        path = user_dir(self.mailboxes_dir, addr) / METADATA_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False
        now = time.time() if now is None else now
        whole, tokens = parse(data, now)
        return isinstance(whole.get(KEY), dict) and _current(tokens, token, now)

    def add(self, addr: str, token: str, now: float | None = None) -> None:
        """Record ``token`` as set now; the oldest go beyond MAX_TOKENS."""
        check_token(token)
        if self.is_current(addr, token, now):
            return
        with self._change(addr, now) as (tokens, now):
            if _current(tokens, token, now):
                return  # set meanwhile by another
            tokens.pop(token, None)
            tokens[token] = now
            for old in sorted(tokens, key=tokens.__getitem__)[: max(0, len(tokens) - MAX_TOKENS)]:
                del tokens[old]

    def remove(self, addr: str, token: str) -> bool:
        """Forget ``token`` (the gateway said it is dead); True if it was there."""
        with self._change(addr, None) as (tokens, _):
            return tokens.pop(token, None) is not None

    @contextmanager
    def _change(self, addr: str, now: float | None) -> Iterator[tuple[dict[str, float], float]]:
        udir = user_dir(self.mailboxes_dir, addr)
        if not udir.is_dir():
            raise FileNotFoundError(f"no account {addr}")
        now = time.time() if now is None else now
        path = udir / METADATA_FILE
        with FileLock(udir / LOCK_FILE):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = b"{}"
            whole, tokens = parse(data, now)
            before = dict(tokens)
            yield tokens, now
            if tokens != before or KEY not in whole or not isinstance(whole[KEY], dict):
                atomic_write(path, encode(whole, tokens))
