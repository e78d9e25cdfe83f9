"""Every value that reaches a template, checked once, here.

The rendered files are read by root: supervisord starts programs from its configuration, Dovecot
runs as root. A value with a newline, a ``%(...)s`` or a space could add a ``[program:...]``
section or a Dovecot setting, so no template sees chatmail.ini, the command line or the
environment directly: ``TemplateValues`` is built from them and refuses anything a
configuration file cannot hold literally. Templates get this object (and the ``Layout`` built
from its checked ``state_dir``), nothing else.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Paths go unquoted into Dovecot's and supervisord's configuration (supervisord also expands
# %(...)s): keep to characters both read literally.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9/._@+\[\]-]*")
# Debian's adduser NAME_REGEX, without the trailing $ of machine accounts
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_HEX = re.compile(r"[0-9a-f]{64}|")
_MIB = 1024 * 1024
# the units of Dovecot's quota_rule, largest first; a bare number there means kilobytes
_DOVECOT_UNITS = (("G", 1024**3), ("M", _MIB), ("k", 1024), ("b", 1))


class RenderError(ValueError):
    """The configuration cannot be rendered; the message says which setting to fix."""


def _path(value: object) -> str | None:
    if isinstance(value, Path) and _SAFE_PATH.fullmatch(str(value)):
        return None
    return "use an absolute path of letters, digits and ./_-@+[]"


def _user(value: object) -> str | None:
    if isinstance(value, str) and _USER_NAME.fullmatch(value):
        return None
    return "a unix user name is lowercase letters, digits, _ and -"


def _domain(value: object) -> str | None:
    if isinstance(value, str) and _DOMAIN.fullmatch(value) and ".." not in value:
        return None
    return "not a domain name or IPv4 address"


def _addr_domain(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return _address(value[1:-1])
    return _domain(value)


def _flag(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _address(value: object) -> str | None:
    # written as Python writes it back: no IPv6 scope (%...), which may hold anything
    try:
        if str(ipaddress.ip_address(value)) == value and "%" not in value:  # type: ignore[arg-type,operator]
            return None
    except ValueError:
        pass
    return "not an IP address such as 127.0.0.1 or ::1"


def _count(low: int, high: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is int and low <= value <= high:
            return None
        return f"must be a whole number from {low} to {high}"

    return check


_MAILTO = re.compile(r"(mailto:[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253})?")


def _mailto(value: object) -> str | None:
    """The admin contact Dovecot gives clients: empty, or mailto: and a plain address."""
    if isinstance(value, str) and _MAILTO.fullmatch(value):
        return None
    return "not an e-mail address such as privacy@example.org"


def _quota(value: object) -> str | None:
    """max_mailbox_size: enough for a trim target of at least 1 MiB (see ``quota_target_mb``)."""
    if type(value) is int and _MIB * 2 <= value <= 2**50:
        return None
    return "must be from 2M (a full mailbox is trimmed to 70% of it, in whole MiB) to 1024T"


def _one_of(*allowed: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


def _digest(value: object) -> str | None:
    return None if isinstance(value, str) and _HEX.fullmatch(value) else "not a sha256 digest"


def _check(check: Callable[[object], str | None], what: str) -> dict[str, object]:
    return {"check": check, "what": what}


@dataclass(frozen=True)
class TemplateValues:
    """The values templates may use; construction fails with RenderError on any bad one."""

    mail_domain: str = dataclasses.field(metadata=_check(_domain, "mail_domain"))
    config_path: Path = dataclasses.field(metadata=_check(_path, "chatmail.ini"))
    vmail_user: str = dataclasses.field(metadata=_check(_user, "vmail_user"))
    vmail_uid: int = dataclasses.field(metadata=_check(_count(0, 2**32 - 2), "vmail uid"))
    max_imap_connections: int = dataclasses.field(
        metadata=_check(_count(1, 1_000_000), "max_imap_connections")
    )
    listen: str = dataclasses.field(metadata=_check(_address, "listen address"))
    imap_port: int = dataclasses.field(metadata=_check(_count(1, 65535), "IMAP port"))
    bin_dir: Path = dataclasses.field(metadata=_check(_path, "bin_dir"))
    dovecot_bin: Path = dataclasses.field(metadata=_check(_path, "dovecot binary"))
    state_dir: Path = dataclasses.field(metadata=_check(_path, "state directory"))
    mailboxes_dir: Path = dataclasses.field(metadata=_check(_path, "mailboxes_dir"))
    config_digest: str = dataclasses.field(metadata=_check(_digest, "chatmail.ini digest"))
    code_digest: str = dataclasses.field(metadata=_check(_digest, "code digest"))
    addr_domain: str = dataclasses.field(metadata=_check(_addr_domain, "mail_domain"))
    hostname: str = dataclasses.field(metadata=_check(_domain, "host name"))
    loopback_only: bool = dataclasses.field(metadata=_check(_flag, "loopback flag"))
    tls_cert: Path = dataclasses.field(metadata=_check(_path, "TLS certificate"))
    tls_key: Path = dataclasses.field(metadata=_check(_path, "TLS key"))
    smtp_port: int = dataclasses.field(metadata=_check(_count(1, 65535), "SMTP port"))
    submission_port: int = dataclasses.field(metadata=_check(_count(1, 65535), "submission port"))
    submissions_port: int = dataclasses.field(metadata=_check(_count(1, 65535), "submissions port"))
    imaps_port: int = dataclasses.field(metadata=_check(_count(1, 65535), "IMAPS port"))
    filtermail_port: int = dataclasses.field(
        metadata=_check(_count(1, 65535), "filtermail_smtp_port")
    )
    filtermail_port_incoming: int = dataclasses.field(
        metadata=_check(_count(1, 65535), "filtermail_smtp_port_incoming")
    )
    reinject_port: int = dataclasses.field(
        metadata=_check(_count(1, 65535), "postfix_reinject_port")
    )
    reinject_port_incoming: int = dataclasses.field(
        metadata=_check(_count(1, 65535), "postfix_reinject_port_incoming")
    )
    max_message_size: int = dataclasses.field(metadata=_check(_count(1, 2**40), "max_message_size"))
    max_mailbox_size: int = dataclasses.field(metadata=_check(_quota, "max_mailbox_size"))
    quota_warning_percent: int = dataclasses.field(
        metadata=_check(_count(1, 99), "quota warning percentage")
    )
    quota_target_mb: int = dataclasses.field(
        metadata=_check(_count(1, 2**30), "quota trim target (MiB)")
    )
    max_smtp_connections: int = dataclasses.field(
        metadata=_check(_count(1, 1_000_000), "max_smtp_connections")
    )
    smtp_recipient_limit: int = dataclasses.field(
        metadata=_check(_count(1, 1_000_000), "smtpd_recipient_limit")
    )
    admin_contact: str = dataclasses.field(metadata=_check(_mailto, "privacy_mail"))
    postfix_master: Path = dataclasses.field(metadata=_check(_path, "postfix master binary"))
    scheduler: str = dataclasses.field(metadata=_check(_one_of("cron", "systemd"), "scheduler"))
    expire_hour: int = dataclasses.field(metadata=_check(_count(0, 23), "expiry hour"))
    expire_minute: int = dataclasses.field(metadata=_check(_count(0, 59), "expiry minute"))
    expire_timer_delay: int = dataclasses.field(metadata=_check(_count(0, 1440), "timer delay"))
    run_cron: bool = dataclasses.field(metadata=_check(_flag, "run_cron flag"))
    cron_bin: Path = dataclasses.field(metadata=_check(_path, "cron binary"))

    @property
    def listen_host(self) -> str:
        """The listen address as Postfix's master.cf writes it before ``:port``."""
        return f"[{self.listen}]" if ":" in self.listen else self.listen

    @property
    def quota_storage(self) -> str:
        """max_mailbox_size as Dovecot's ``quota_rule`` reads it, in the largest exact unit."""
        for unit, factor in _DOVECOT_UNITS:
            if self.max_mailbox_size % factor == 0:
                return f"{self.max_mailbox_size // factor}{unit}"
        raise AssertionError("every size is a whole number of bytes")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = f.metadata["check"](value)
            if problem is not None:
                raise RenderError(f"{f.metadata['what']} {str(value)!r}: {problem}")
