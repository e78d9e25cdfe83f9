"""Mail as chat clients send it, for tests that talk to a real relay over SMTP.

``Gpg`` encrypts with Debian's GnuPG (a real OpenPGP implementation, fresh home and key);
``encrypted_mail`` wraps its armored output in the RFC 3156 shape Delta Chat sends.
"""

from __future__ import annotations

import email.utils
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from helpers_env import require_binary


class Gpg:
    """GnuPG with its own home and one Curve25519 key; ``close()`` stops its agent."""

    def __init__(self, uid: str = "test@example.org") -> None:
        self.binary = require_binary("gpg")
        self.home = Path(tempfile.mkdtemp(prefix="chatmail-gnupg-"))
        self.home.chmod(0o700)
        self.run("--quick-gen-key", uid, "future-default", "default", "never")
        self.uid = uid

    @property
    def base_args(self) -> list[str]:
        home = ["--homedir", str(self.home), "--batch", "--yes"]
        return [self.binary, *home, "--pinentry-mode", "loopback", "--passphrase", ""]

    def run(self, *args: str, data: bytes = b"") -> bytes:
        return subprocess.run(
            [*self.base_args, *args],
            input=data,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout

    def encrypt(self, data: bytes) -> str:
        return self.run("--armor", "--encrypt", "--recipient", self.uid, data=data).decode()

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


def encrypted_mail(
    sender: str, recipients: list[str], armored: str, subject: str = "[...]", headers: str = ""
) -> bytes:
    """An RFC 3156 encrypted message as Delta Chat sends one, with CRLF line ends."""
    domain = sender.rsplit("@", 1)[1].strip("[]")
    text = (
        f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: {subject}\r\nDate: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{uuid.uuid4()}@{domain}>\r\n{headers}"
        "Chat-Version: 1.0\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        'boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: application/pgp-encrypted\r\n"
        "Content-Description: PGP/MIME version\r\n\r\nVersion: 1\r\n"
        '--b1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n'
        "Content-Description: OpenPGP encrypted message\r\n"
        'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        + armored.replace("\r\n", "\n").replace("\n", "\r\n")
        + "\r\n--b1--\r\n"
    )
    return text.encode()


def plain_mail(sender: str, recipients: list[str], body: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: hello\r\nDate: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.org>\r\n\r\n{body}\r\n"
    ).encode()
