"""Fixtures of the unit tests: GnuPG for the filtermail tests (test_openpgp, test_openpgp_impls)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from helpers_env import require_binary


@pytest.fixture(scope="module")
def gpg(tmp_path_factory) -> Iterator[Callable[..., bytes]]:
    """GnuPG (Debian's gnupg) with a fresh home and one Curve25519 key."""
    binary = require_binary("gpg")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)

    def run(*args: str, data: bytes = b"") -> bytes:
        return subprocess.run(
            [
                binary,
                "--homedir",
                str(home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                *args,
            ],
            input=data,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout

    run("--quick-gen-key", "alice@example.org", "future-default", "default", "never")
    yield run
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
