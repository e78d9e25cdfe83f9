"""Parsers for chatmail.ini values: each turns the text of one value into its type.

Each raises ValueError with a message saying what was expected; ``chatmaild.config`` adds the
file and key to it.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from pathlib import Path

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^(\d+)\s*([KMGT]?)B?$", re.IGNORECASE)
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def parse_size(text: str) -> int:
    """'500M' -> bytes (binary units, as Dovecot reads them)."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError("expected a size such as 500M, 1G or 31457280")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


# the words ConfigParser.getboolean() knows; an empty value is false, as relays have written it
_BOOLEANS = {**configparser.ConfigParser.BOOLEAN_STATES, "": False}


def parse_bool(text: str) -> bool:
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        words = ", ".join(w for w in configparser.ConfigParser.BOOLEAN_STATES)
        raise ValueError(f"expected one of {words}") from None


def parse_optional_bool(text: str) -> bool | None:
    """A switch whose empty value means "the default for this kind of relay" (None)."""
    return parse_bool(text) if text.strip() else None


def parse_resolver(text: str) -> tuple[str, int] | None:
    """``IP`` or ``IP:PORT`` (``[IPv6]:PORT``) of a DNS resolver; empty means the system's."""
    value = text.strip()
    if not value:
        return None
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected IP, IP:PORT or [IPv6]:PORT")
            port = parse_int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = parse_int(port_text)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError("expected the IP address of a DNS resolver, e.g. 127.0.0.1:53") from None
    if not 1 <= port <= 65535:
        raise ValueError("a port is between 1 and 65535")
    return host, port


def parse_int(text: str) -> int:
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise ValueError("expected a whole number such as 9")
    return int(value)


def parse_float(text: str) -> float:
    value = float(text.strip())
    if not value >= 0:  # also refuses nan
        raise ValueError("must be a non-negative number")
    return value


def parse_str(text: str) -> str:
    return text.strip()


def parse_optional_str(text: str) -> str | None:
    """A value an operator may set empty to switch the feature off (None)."""
    return text.strip() or None


def parse_domain(text: str) -> str:
    """A DNS name, or an IPv4 address (written with or without brackets) for an IP-only relay."""
    value = text.strip().lower()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        ipaddress.IPv4Address(value)
        return value
    except ValueError:
        pass
    if value.rsplit(".", 1)[-1].isdigit():
        raise ValueError(
            "not a valid IPv4 address (nor a domain name: no top-level domain is numeric)"
        )
    if not _HOSTNAME_RE.fullmatch(value):
        raise ValueError("expected a domain name such as chat.example.org or an IPv4 address")
    return value


def parse_path(text: str) -> Path:
    value = text.strip()
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return Path(value)


def parse_cert_and_key(text: str) -> tuple[Path, Path] | None:
    """``CERT KEY``: two absolute paths separated by whitespace; empty means not set."""
    items = text.split()
    if not items:
        return None
    if len(items) != 2:
        raise ValueError(
            f"expected two absolute paths (certificate, then key) separated by a space, "
            f"got {len(items)} item(s)"
        )
    for what, item in zip(("certificate", "key"), items, strict=True):
        if not item.startswith("/"):
            raise ValueError(f"the {what} path {item!r} is not absolute")
    return Path(items[0]), Path(items[1])


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
