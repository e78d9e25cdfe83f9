"""The ``dclogin:`` URL that sets up a Delta Chat account, and its QR code for a terminal.

Delta Chat reads ``dclogin:ADDR?p=PASSWORD&v=1&ih=HOST&ip=PORT&is=ssl&sh=HOST&sp=PORT&ss=ssl``;
``ic=3`` makes it accept the self-signed certificate of an IP-only relay. The address keeps
``@[]`` (an IP literal) unescaped, the password is fully percent-encoded.
"""

from __future__ import annotations

import io
from urllib.parse import quote

import segno


def url(
    addr: str, password: str, host: str, imap_port: int, smtp_port: int, self_signed: bool
) -> str:
    params = [
        ("p", quote(password, safe="")),
        ("v", "1"),
        ("ih", host),
        ("ip", str(imap_port)),
        ("is", "ssl"),
        ("sh", host),
        ("sp", str(smtp_port)),
        ("ss", "ssl"),
    ]
    if self_signed:
        params.append(("ic", "3"))
    query = "&".join(f"{name}={value}" for name, value in params)
    return f"dclogin:{quote(addr, safe='@[]')}?{query}"


def terminal_qr(text: str) -> str:
    """``text`` as a QR code drawn with block characters, dark on a light terminal border."""
    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue().rstrip("\n")
