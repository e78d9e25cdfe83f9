"""Environment checks shared by the tests: skip outside CI, fail in CI."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (outside CI) or fail (in CI) unless ``condition`` holds."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for this test in CI: {reason}")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    require(path is not None, f"{name} is not installed (Debian package needed)")
    return path  # type: ignore[return-value]


def require_root() -> None:
    require(os.geteuid() == 0, "needs root (starts Dovecot and runs daemons as vmail)")


# ports handed out in this test session: the kernel may offer a just-released port again, and
# a relay given the same port twice for two listeners refuses to start
_given: set[int] = set()


def free_port() -> int:
    """A loopback port that nothing listens on, never the same twice in one session."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
