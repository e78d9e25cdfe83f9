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


@dataclass(frozen=True, slots=True)
class Folder:
    """A Maildir folder as one scandir saw it: its real subdirectories and file names."""

    path: str
    dirs: dict[str, str]  # cur/new/tmp → path
    files: frozenset[str]  # names of the regular files in it (Dovecot's, password, ...)


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


def _folder(path: str, subfolders: list[str] | None = None) -> Folder | None:
    """One scandir of ``path``; its ``.<name>`` directories go to ``subfolders`` if given."""
    dirs, names = {}, set()
    try:
        entries = os.scandir(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name in ("cur", "new", "tmp"):
                        dirs[entry.name] = entry.path
                    elif subfolders is not None and entry.name.startswith("."):
                        subfolders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    names.add(entry.name)
            except OSError:
                continue
    return Folder(path, dirs, frozenset(names))


def folders(home: str) -> list[Folder]:
    """The Maildir folders of the mailbox at ``home``: the root (INBOX), then each ``.<name>``
    (one level, as Dovecot's Maildir++ layout has them); one scandir each."""
    subfolders: list[str] = []
    root = _folder(home, subfolders)
    found = [root] if root is not None else []
    found += [f for f in map(_folder, subfolders) if f is not None]
    return found


def messages(home: str, found: list[Folder] | None = None) -> Iterator[Message]:
    """Every message of the mailbox at ``home`` (or in its ``found`` folders), in no order."""
    for folder in folders(home) if found is None else found:
        for kind in MESSAGE_DIRS:
            if kind not in folder.dirs:
                continue
            for entry, st in files(folder.dirs[kind]):
                size = name_size(entry.name)
                size = st.st_size if size is None else size
                yield Message(entry.path, size, st.st_mtime, kind == "cur")


def temp_files(home: str, found: list[Folder] | None = None) -> Iterator[tuple[str, float]]:
    """(path, mtime) of each file in the ``tmp/`` of each folder: deliveries in progress, or
    leftovers of ones a crash interrupted."""
    for folder in folders(home) if found is None else found:
        if "tmp" in folder.dirs:
            for entry, st in files(folder.dirs["tmp"]):
                yield entry.path, st.st_mtime
