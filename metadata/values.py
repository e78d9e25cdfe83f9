"""The relay-wide values chat clients read with GETMETADATA "" /shared/vendor/deltachat/<name>.

- ``irohrelay``: chatmail.ini's ``iroh_relay``; none when it is empty, or when it names
  ``iroh.<IP address>``, the default on an IP-only relay, which no DNS can make a host;
- ``turn``: ``<host>:3478:<credentials>``, the credentials read afresh from the TURN service's
  socket (``turn_socket_path``) for each lookup; none, and no error, when the socket is absent
  or gives nothing;
- ``maxsmtprecipients``: Postfix's recipient limit as the relay renders it;
- ``appversions``: the file at ``app_versions_path`` as it is, read for each lookup (small, and
  an operator may replace it at any time); none when it is absent.

Each producer returns None for "no value"; lookups run in a worker thread, so the short socket
timeout never stalls the dict server.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from chatmaild.config import SMTP_RECIPIENT_LIMIT, Config

log = logging.getLogger(__name__)

TURN_PORT = 3478
TURN_TIMEOUT = 1.0  # seconds for the TURN service to answer
MAX_VALUE = 64 * 1024  # bytes of a value read from a socket or a file


def turn_credentials(path: Path, timeout: float = TURN_TIMEOUT) -> str | None:
    """What the TURN service writes on a new connection to ``path``, or None."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            chunks, size = [], 0
            while size < MAX_VALUE and (chunk := sock.recv(4096)):
                chunks.append(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return None
    except OSError as exc:  # refused, timed out: the service is down, not the relay
        log.warning("TURN credentials socket %s: %s", path, exc)
        return None
    text = b"".join(chunks).decode("utf-8", "replace").strip()
    return text or None


def file_value(path: Path) -> str | None:
    """The text of ``path``, or None if there is no such file."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_VALUE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    if len(data) > MAX_VALUE:
        log.warning("%s is over %d bytes: not served", path, MAX_VALUE)
        return None
    return data.decode("utf-8", "replace")


def iroh_relay(url: str | None) -> str | None:
    """The iroh relay to offer clients; see the module's doc."""
    if not url:
        return None
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.removeprefix("iroh."))
    except ValueError:
        return url
    return None if host.startswith("iroh.") else url


def producers(cfg: Config) -> dict[str, Callable[[], str | None]]:
    """The server values of the relay configured by ``cfg``."""

    def turn() -> str | None:
        credentials = turn_credentials(cfg.turn_socket_path)
        return f"{cfg.mail_domain}:{TURN_PORT}:{credentials}" if credentials else None

    return {
        "irohrelay": lambda: iroh_relay(cfg.iroh_relay),
        "turn": turn,
        "maxsmtprecipients": lambda: str(SMTP_RECIPIENT_LIMIT),
        "appversions": lambda: file_value(cfg.app_versions_path),
    }
