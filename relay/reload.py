"""Dovecot and Postfix re-read their configuration without a restart (SIGHUP, ``postfix
reload``), and only when it changed: each has its directory of rendered files and a record of
the digest of the files it last read (a Dovecot reload drops logins in progress).
"""

from __future__ import annotations

import hashlib
import subprocess
import xmlrpc.client
from pathlib import Path

from chatmaild.mailbox import atomic_write

from .errors import RelayError
from .layout import Layout

RELOADABLE = ("dovecot", "postfix")


def _config_dir(layout: Layout, name: str) -> Path:
    return layout.dovecot_dir if name == "dovecot" else layout.postfix_dir


def _applied_path(layout: Layout, name: str) -> Path:
    return layout.dovecot_applied if name == "dovecot" else layout.postfix_dir / "applied.sha256"


def _config_digest(layout: Layout, name: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(_config_dir(layout, name).iterdir()):
        if path.is_file() and path.suffix != ".sha256":
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _applied_digest(layout: Layout, name: str) -> str:
    try:
        return _applied_path(layout, name).read_text().strip()
    except FileNotFoundError:
        return ""


def mark_applied(layout: Layout, name: str) -> None:
    atomic_write(_applied_path(layout, name), _config_digest(layout, name).encode(), mode=0o644)


def reload_changed(server: xmlrpc.client.ServerProxy, layout: Layout) -> None:
    """Make a running Dovecot or Postfix re-read configuration that changed since it read it."""
    for name in RELOADABLE:
        if _config_digest(layout, name) == _applied_digest(layout, name):
            continue
        # one that does not run now reads the new files when it is started
        state = server.supervisor.getProcessInfo(name)["statename"]
        if state in ("RUNNING", "STARTING"):
            if name == "dovecot":
                server.supervisor.signalProcess(name, "HUP")
            else:
                _postfix_reload(layout)
        mark_applied(layout, name)


def _postfix_reload(layout: Layout) -> None:
    result = subprocess.run(
        ["postfix", "-c", str(layout.postfix_dir), "reload"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise RelayError(f"postfix reload failed: {(result.stderr or result.stdout).strip()}")
