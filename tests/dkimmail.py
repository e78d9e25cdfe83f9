"""Keys and chat messages for the DKIM tests (unit and component)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from helpers_env import require_binary

from filtermail.dkim import generate_key

DOMAIN = "example.org"
SELECTOR = "sel"
KEY_NAME = f"{SELECTOR}._domainkey.{DOMAIN}"

# an encrypted chat message's outer header, as a chat client sends it (values made up)
HEADER = (
    b"From: <alice@example.org>\r\n"
    b"To: <bob@example.net>\r\n"
    b"Subject: [...]\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <Mr.abc123@example.org>\r\n"
    b"Chat-Version: 1.0\r\n"
    b"Autocrypt: addr=alice@example.org; prefer-encrypt=mutual;\r\n"
    b" keydata=xjMEZQAAABYJKwYBBAHaRw8BAQdAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
    b' boundary="b1"\r\n'
)
BODY = (
    b"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
    b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n"
    b"-----BEGIN PGP MESSAGE-----\r\n\r\nwV4DAAAAAAAAAAASAQdAAAAA\r\n-----END PGP MESSAGE-----\r\n"
    b"\r\n--b1--\r\n"
)


def chat_message(body: bytes = BODY, header: bytes = HEADER) -> bytes:
    return header + b"\r\n" + body


def sized_message(size: int) -> bytes:
    """A chat message of about ``size`` bytes (armored lines of 76 characters)."""
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    armored = b"-----BEGIN PGP MESSAGE-----\r\n\r\n" + line * (size // len(line))
    return chat_message(armored + b"-----END PGP MESSAGE-----\r\n")


def record_strings(record: str) -> list[str]:
    """The quoted strings of a zone file TXT line."""
    return re.findall(r'"([^"]*)"', record)


@dataclass(frozen=True)
class DkimKey:
    path: Path
    record: str  # the zone file line generate_key returned

    @property
    def strings(self) -> list[str]:
        return record_strings(self.record)

    @property
    def value(self) -> bytes:
        """The TXT record as a resolver returns it: the strings concatenated."""
        return "".join(self.strings).encode("ascii")


def make_key(directory: Path, selector: str = SELECTOR, domain: str = DOMAIN) -> DkimKey:
    require_binary("openssl")
    path = directory / f"{selector}.{domain}.private"
    return DkimKey(path, generate_key(path, selector, domain))
