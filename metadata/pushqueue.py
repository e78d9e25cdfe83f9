"""The push notifier's queue on disk: one small JSON file per notification not yet delivered.

A notification is a file from the moment ``notify`` returns until the gateway has taken it (or
it is given up), so a crash or a restart loses none. Files are written once, atomically
(``chatmaild.mailbox.atomic_write``: temporary file, fsync, rename, fsync of the directory),
and removed when done; they are never rewritten. Layout::

    <queue_dir>/<32 hex digits>.json  {"addr": ..., "token": ..., "queued": unixtime, "attempts": n}
    <queue_dir>/.tmp.*                a write a crash interrupted: removed at start
    <queue_dir>/corrupt/              files that could not be read, set aside for the operator

Removing a file is not fsynced: if a crash undoes the removal, the notification is sent once
more after the restart (delivery is at least once; a second "new mail" wake-up is harmless).
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from chatmaild.mailbox import atomic_write

log = logging.getLogger(__name__)

SUFFIX = ".json"
TEMP_PREFIX = ".tmp."  # the temporary files of chatmaild.mailbox.atomic_write
CORRUPT_DIR = "corrupt"
MAX_FILE = 16 * 1024  # an address and a token take a few hundred bytes; more is no item of ours


class CorruptItem(ValueError):
    """A queue file that holds no notification; the message says why (never its content)."""


@dataclass(slots=True)
class Item:
    """One notification, in memory while it waits: small, so 10,000 of them take a few MB."""

    name: str  # its file name in the queue directory
    addr: str
    token: str
    queued: float  # unix time of notify(): the give-up deadline counts from here
    attempts: int = 0  # tries so far: the file has the count when it was written (see notifier)

    @property
    def key(self) -> tuple[str, str]:
        return (self.addr, self.token)


def new_item(addr: str, token: str, now: float) -> Item:
    # random names: nothing from the network becomes part of a path
    return Item(uuid.uuid4().hex + SUFFIX, addr, token, now)


def encode_item(item: Item) -> bytes:
    fields = {"addr": item.addr, "token": item.token, "queued": item.queued}
    fields["attempts"] = item.attempts
    return json.dumps(fields).encode("ascii")


def _field(fields: dict, name: str, kind: type) -> object:
    value = fields.get(name)
    # bool is an int to isinstance(), and no count or time of ours
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CorruptItem(f"no valid {name!r}")
    return value


def decode_item(name: str, data: bytes) -> Item:
    """The notification in file ``name`` holding ``data``, or CorruptItem."""
    try:
        fields = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        raise CorruptItem("not JSON") from None
    if not isinstance(fields, dict):
        raise CorruptItem("not a JSON object")
    addr, token = _field(fields, "addr", str), _field(fields, "token", str)
    queued, attempts = _field(fields, "queued", (int, float)), _field(fields, "attempts", int)
    if not addr or not token:
        raise CorruptItem("empty address or token")
    if not math.isfinite(queued) or attempts < 0:  # type: ignore[arg-type,operator]
        raise CorruptItem("bad queued time or attempt count")
    return Item(name, addr, token, float(queued), attempts)  # type: ignore[arg-type]


def write_item(queue_dir: Path, item: Item) -> None:
    """Put ``item`` on disk; when this returns, it survives a crash."""
    atomic_write(queue_dir / item.name, encode_item(item))


def remove_item(queue_dir: Path, item: Item) -> None:
    try:
        os.unlink(queue_dir / item.name)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot remove queue file %s (it will be sent again): %s", item.name, exc)


def read_item(path: Path) -> Item:
    with open(path, "rb") as fp:
        data = fp.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise CorruptItem("file too large")
    return decode_item(path.name, data)


def set_aside(queue_dir: Path, name: str, reason: str) -> None:
    """Move the unreadable queue file ``name`` into corrupt/, with one log line.

    Moved, not removed, as Postfix does with its corrupt queue files: the writer is atomic,
    so a bad file means a bug, a damaged disk or a hand edit, and the operator may want to
    see which. Out of the queue it is never tried again and does not hold up the others; it
    holds at most one notification, which is lost (the device gets the next one).
    """
    aside = queue_dir / CORRUPT_DIR
    try:
        aside.mkdir(mode=0o700, exist_ok=True)
        os.replace(queue_dir / name, aside / name)
    except OSError as exc:
        log.error("queue file %s is corrupt (%s) and could not be set aside: %s", name, reason, exc)
        return
    log.error("queue file %s is corrupt (%s): moved to %s/", name, reason, CORRUPT_DIR)


def load_queue(queue_dir: Path) -> list[Item]:
    """Every notification in ``queue_dir``, oldest first, after cleaning up after a crash."""
    items = []
    with os.scandir(queue_dir) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                # the notify() that wrote it never returned, so nobody counts on it
                Path(entry.path).unlink(missing_ok=True)
            elif entry.name.endswith(SUFFIX) and entry.is_file(follow_symlinks=False):
                try:
                    items.append(read_item(Path(entry.path)))
                except CorruptItem as exc:
                    set_aside(queue_dir, entry.name, str(exc))
                except OSError as exc:
                    set_aside(queue_dir, entry.name, exc.strerror or type(exc).__name__)
    items.sort(key=lambda item: item.queued)
    return items


def count_pending(queue_dir: Path) -> int:
    """How many notifications wait in ``queue_dir`` (for ``chatmail-relay status``; reads no
    file, changes nothing)."""
    try:
        with os.scandir(queue_dir) as entries:
            return sum(
                1
                for entry in entries
                if entry.name.endswith(SUFFIX) and not entry.name.startswith(TEMP_PREFIX)
            )
    except FileNotFoundError:
        return 0
