"""Mail as chat clients send it: GnuPG-encrypted RFC 3156 messages of a chosen size.

``Gpg`` runs Debian's GnuPG with its own home (under the benchmark's root) and one Curve25519
key; ``encrypted_body`` encrypts random bytes so that a whole message comes out at about the
size asked for. The armored body is made once per size; ``message`` puts a fresh header
(From, To, Date, Message-ID) in front of it for each message, which is all a filter sees
change from one chat message to the next.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

MIME_HEAD = (
    "Chat-Version: 1.0\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
    'boundary="b1"\r\n\r\n'
)
MIME_PARTS = (
    "--b1\r\nContent-Type: application/pgp-encrypted\r\n"
    "Content-Description: PGP/MIME version\r\n\r\nVersion: 1\r\n"
    '--b1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n'
    "Content-Description: OpenPGP encrypted message\r\n"
    'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
)
MIME_END = "\r\n--b1--\r\n"
UID = "bench@example.org"


class Gpg:
    """GnuPG with its own home directory and one key (``gpg --quick-gen-key``)."""

    def __init__(self, home: Path) -> None:
        self.binary = shutil.which("gpg") or "gpg"
        self.home = home
        home.mkdir(mode=0o700)
        self.run("--quick-gen-key", UID, "future-default", "default", "never")

    def run(self, *args: str, data: bytes = b"") -> bytes:
        argv = [self.binary, "--homedir", str(self.home), "--batch", "--yes"]
        argv += ["--pinentry-mode", "loopback", "--passphrase", ""]
        done = subprocess.run(
            [*argv, *args], input=data, capture_output=True, check=True, timeout=120
        )
        return done.stdout

    def armor(self, plaintext: bytes) -> bytes:
        """ASCII-armored encryption to our key, CRLF line ends (as sent)."""
        args = ("--armor", "--compress-algo", "none", "--encrypt", "--recipient", UID)
        armored = self.run(*args, data=plaintext)
        return armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            check=False,
            capture_output=True,
        )


@contextlib.contextmanager
def gpg_in(home: Path) -> Iterator[Gpg]:
    """A ``Gpg`` whose agent is stopped at the end."""
    gpg = Gpg(home)
    try:
        yield gpg
    finally:
        gpg.close()


def head(sender: str, rcpt: str) -> bytes:
    """A fresh header as Delta Chat writes it (Subject hidden, the rest inside)."""
    domain = sender.rpartition("@")[2]
    return (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: [...]\r\n"
        f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{uuid.uuid4()}@{domain}>\r\n" + MIME_HEAD
    ).encode()


def body(armored: bytes) -> bytes:
    """The two RFC 3156 parts around ``armored``, dot-stuffed for SMTP (RFC 5321 §4.5.2)."""
    text = MIME_PARTS.encode() + armored.rstrip(b"\r\n") + MIME_END.encode()
    return text.replace(b"\r\n.", b"\r\n..")  # it starts with "--b1", never with "."


def message(sender: str, rcpt: str, stuffed_body: bytes) -> bytes:
    return head(sender, rcpt) + stuffed_body


def encrypted_body(gpg: Gpg, size: int) -> bytes:
    """A stuffed body that makes a message of about ``size`` bytes with ``head``'s header.

    Armor grows by about 4/3 * 65/64 of the plaintext: one guess, then one correction.
    """
    overhead = len(head("a00000000@bench.chatmail.test", "a00000001@bench.chatmail.test"))
    plain = max(16, int((size - overhead - 500) * 0.74))
    for _ in range(2):
        made = body(gpg.armor(os.urandom(plain)))
        plain = max(16, plain + int((size - overhead - len(made)) * 0.74))
    return made
