"""Messages shaped as Delta Chat sends them, for tests that talk SMTP to filtermail or a relay.

The encrypted ones carry a hand-built OpenPGP stream (a session key packet, then one SEIPD of
random bytes), as tests/unit/test_openpgp.py builds them, or what ``Gpg`` (Debian's GnuPG,
a fresh home and key) encrypted.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from helpers_env import require_binary

from filtermail.openpgp import BEGIN, END, crc24


class Gpg:
    """GnuPG with its own home and one Curve25519 key; ``close()`` stops its agent."""

    def __init__(self, uid: str = "test@example.org") -> None:
        self.binary = require_binary("gpg")
        self.home = Path(tempfile.mkdtemp(prefix="chatmail-gnupg-"))
        self.home.chmod(0o700)
        self.uid = uid
        self.run("--quick-gen-key", uid, "future-default", "default", "never")

    def run(self, *args: str, data: bytes = b"") -> bytes:
        home = ("--homedir", str(self.home), "--batch", "--yes")
        unattended = ("--pinentry-mode", "loopback", "--passphrase", "")
        return subprocess.run(
            [self.binary, *home, *unattended, *args],
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


def _to(rcpt: str | Sequence[str]) -> str:
    return ", ".join(f"<{r}>" for r in ([rcpt] if isinstance(rcpt, str) else rcpt))


def _packet(tag: int, body: bytes) -> bytes:
    """A new-format packet with a five-octet length (RFC 9580 §4.2.1.3)."""
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def armored(size: int = 200, crc: bool = True) -> str:
    """An armored PKESK v3 + SEIPD v1 stream of about ``size`` octets, CRLF lines."""
    data = _packet(1, b"\x03" + os.urandom(40)) + _packet(18, b"\x01" + os.urandom(size))
    b64 = base64.b64encode(data).decode()
    lines = [BEGIN, "", *(b64[i : i + 64] for i in range(0, len(b64), 64))]
    if crc:
        lines.append("=" + base64.b64encode(crc24(data).to_bytes(3, "big")).decode())
    return "\r\n".join([*lines, END]) + "\r\n"


def encrypted(
    sender: str,
    rcpt: str | Sequence[str],
    armor: str | None = None,
    subject: str = "[...]",
    received: str = "from client (unknown [203.0.113.7]) by relay with ESMTPSA id 4AB",
) -> bytes:
    """An RFC 3156 message; ``received`` adds a Received field as submission's smtpd would."""
    head = f"Received: {received}\r\n" if received else ""
    armor = (armor or armored()).replace("\r\n", "\n").replace("\n", "\r\n")
    return (
        f"{head}From: <{sender}>\r\nTo: {_to(rcpt)}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{uuid.uuid4()}@localhost>\r\n"
        "Chat-Version: 1.0\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        ' boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        '--b1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        f"{armor}--b1--\r\n"
    ).encode()


def plain(sender: str, rcpt: str | Sequence[str], body: str = "hello") -> bytes:
    return f"From: <{sender}>\r\nTo: {_to(rcpt)}\r\nSubject: hi\r\n\r\n{body}\r\n".encode()


def setup_message(addr: str) -> bytes:
    return (
        f"From: <{addr}>\r\nTo: <{addr}>\r\nSubject: Autocrypt Setup Message\r\n"
        'Autocrypt-Setup-Message: v1\r\nContent-Type: multipart/mixed; boundary="s"\r\n\r\n'
        "--s\r\nContent-Type: text/plain\r\n\r\nType the setup code.\r\n"
        "--s\r\nContent-Type: application/autocrypt-setup\r\n\r\n"
        f"{armored()}--s--\r\n"
    ).encode()


def bounce(rcpt: str) -> bytes:
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\nTo: <{rcpt}>\r\n"
        "Auto-Submitted: auto-replied\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n--r--\r\n"
    ).encode()
