"""The messages of one mailbox as Dovecot keeps them: Maildir, read without following symlinks.

A mailbox is ``<mailboxes_dir>/<addr>/``: its root is INBOX (``cur/ new/ tmp/``) and each
``.<name>/`` directory beneath it is another folder (Maildir++), with its own ``cur/ new/
tmp/``. Dovecot writes a message into ``tmp/`` and renames it into ``new/`` when it is
complete, so a file in ``new/`` or ``cur/`` is never one being delivered. A client's read-write
SELECT moves it to ``cur/`` (checked with Dovecot 2.3.19: it is then "seen by a device").

File names carry the size: ``<time>.M<usec>P<pid>.<host>,S=<bytes>,W=<vsize>[:2,<flags>]``;
``S=`` is the file's size, so no stat is needed for it (``stat`` when the field is absent).

Everything here is a generator over ``os.scandir``: memory stays flat whatever the number of
files, entries are typed without a stat, and a symlink is never followed (a symlinked folder or
message is skipped). A file that vanishes during the scan (Dovecot expunged it) is skipped too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

SIZE_FIELD = re.compile(r",S=(\d+)")
MESSAGE_DIRS = ("cur", "new")


@dataclass(frozen=True, slots=True)
class Message:
    path: str
    size: int  # bytes, from the name's S= field or the file
    mtime: float  # unix time: when it was delivered (kept through Dovecot's renames)
    seen: bool  # in cur/: a device has had it


def name_size(name: str) -> int | None:
    """The size in a Maildir file name's ``,S=`` field, or None."""
    match = SIZE_FIELD.search(name)
    return int(match.group(1)) if match else None


def subdirs(path: str) -> Iterator[os.DirEntry]:
    """The real directories (no symlinks) in ``path``; none if it is gone or not a directory."""
    try:
        entries = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield entry
            except OSError:
                continue


def files(path: str) -> Iterator[tuple[os.DirEntry, os.stat_result]]:
    """The regular files (no symlinks) in directory ``path``, each with its lstat."""
    try:
        entries = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    yield entry, entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # expunged while we looked


def folders(home: str) -> Iterator[str]:
    """The Maildir folders of the mailbox at ``home``: the root, then each ``.<name>``."""
    yield home
    for entry in subdirs(home):
        if entry.name.startswith(".") and entry.name not in (".", ".."):
            yield entry.path


def message_dirs(folder: str) -> Iterator[tuple[str, str]]:
    """(name, path) of the folder's ``cur`` and ``new``, if they are real directories."""
    for entry in subdirs(folder):
        if entry.name in MESSAGE_DIRS:
            yield entry.name, entry.path


def messages(home: str) -> Iterator[Message]:
    """Every message of the mailbox at ``home``, in no particular order."""
    for folder in folders(home):
        for kind, path in message_dirs(folder):
            for entry, st in files(path):
                size = name_size(entry.name)
                yield Message(
                    entry.path, st.st_size if size is None else size, st.st_mtime, kind == "cur"
                )


def temp_files(home: str) -> Iterator[tuple[str, float]]:
    """(path, mtime) of each file in the ``tmp/`` of each folder: deliveries in progress, or
    leftovers of ones a crash interrupted."""
    for folder in folders(home):
        for entry in subdirs(folder):
            if entry.name == "tmp":
                for file, st in files(entry.path):
                    yield file.path, st.st_mtime
