"""chatmail.ini: the one file an operator edits.

Every daemon and the relay renderer read the ``[params]`` section of the same file. The keys and
their defaults are those of existing chatmail relays, so an operator can switch without editing
anything. Each key is declared once, below, with its default and its documentation; the parser and
the commented default file (``chatmail-relay init``) are both derived from that declaration.

Daemons do not pass this object around: each builds the small settings object it needs from it.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .inivalues import (
    is_ipv4,
    parse_bool,
    parse_cert_and_key,
    parse_domain,
    parse_float,
    parse_int,
    parse_optional_bool,
    parse_optional_str,
    parse_path,
    parse_resolver,
    parse_size,
    parse_str,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SECTION = "params"
# Postfix's smtpd_recipient_limit as the relay renders it; clients read it (maxsmtprecipients)
SMTP_RECIPIENT_LIMIT = 1000


class ConfigError(ValueError):
    """chatmail.ini cannot be used; the message names the file, the key and the bad value."""


def key(
    default: str | None,
    doc: str,
    parse: Callable[[str], object] = parse_str,
    heading: str = "",
) -> object:
    """Declare one chatmail.ini key; ``default=None`` makes it required."""
    meta = {"default": default, "doc": doc, "parse": parse, "heading": heading}
    return field(metadata=meta)


@dataclass(frozen=True)
class Config:
    """The parsed ``[params]`` of chatmail.ini (``path`` is where it was read from)."""

    path: Path = field(metadata={"internal": True})
    mail_domain: str = key(
        None,
        "The domain of the relay's addresses (a DNS name); an IPv4 address makes an IP-only "
        "relay whose addresses look like name@[192.0.2.1].",
        parse_domain,
        heading="Relay",
    )
    mailboxes_dir: Path = key(
        "/home/vmail/mail/{mail_domain}",
        "Directory holding one directory per account: <mailboxes_dir>/<address>/.",
        parse_path,
    )
    vmail_user: str = key("vmail", "Unix user owning the mailboxes and running the daemons.")
    nocreate_file: Path = key(
        "/etc/chatmail-nocreate",
        "While this file exists, no new accounts are created (existing ones keep working).",
        parse_path,
    )
    username_min_length: int = key(
        "9",
        "Shortest local part (before the @) a new account may have.",
        parse_int,
        heading="Account creation",
    )
    username_max_length: int = key(
        "9", "Longest local part (before the @) a new account may have.", parse_int
    )
    password_min_length: int = key("9", "Shortest password a new account may have.", parse_int)
    max_load_1m: float = key(
        "5", "No new accounts while the 1-minute load average is above this.", parse_float
    )
    min_available_memory: int = key(
        "200M", "No new accounts while less memory than this is available.", parse_size
    )
    min_free_disk_space: int = key(
        "1G", "No new accounts while the mailboxes' file system has less free space.", parse_size
    )
    max_user_send_per_minute: int = key(
        "60", "Messages one account may send per minute.", parse_int, heading="Limits"
    )
    max_user_send_burst_size: int = key(
        "10",
        "Messages one account may send at once before the per-minute limit applies.",
        parse_int,
    )
    max_mailbox_size: int = key("500M", "Quota of one mailbox.", parse_size)
    max_message_size: int = key("31457280", "Largest message accepted, in bytes.", parse_int)
    max_imap_connections: int = key(
        "10000", "Most IMAP connections the relay serves at once (all clients).", parse_int
    )
    max_smtp_connections: int = key(
        "1000", "Most SMTP connections the relay serves at once (all clients).", parse_int
    )
    delete_mails_after: int = key(
        "20", "Days after which messages are deleted.", parse_int, heading="Expiry"
    )
    delete_large_after: int = key(
        "7", "Days after which large messages (over 200k) are deleted.", parse_int
    )
    delete_inactive_users_after: int = key(
        "90", "Days without a login after which an account and its mail are deleted.", parse_int
    )
    filtermail_smtp_port: int = key(
        "10080", "Loopback port of the outgoing mail filter.", parse_int, heading="Local ports"
    )
    filtermail_smtp_port_incoming: int = key(
        "10081", "Loopback port of the incoming mail filter.", parse_int
    )
    postfix_reinject_port: int = key(
        "10025", "Loopback port where Postfix takes back filtered outgoing mail.", parse_int
    )
    postfix_reinject_port_incoming: int = key(
        "10026", "Loopback port where Postfix takes back filtered incoming mail.", parse_int
    )
    dkim_selector: str = key(
        "opendkim",
        "DKIM selector: the DNS TXT record is <selector>._domainkey.<mail_domain>.",
        heading="DKIM",
    )
    dkim_key_path: Path = key(
        "/etc/dkimkeys/{dkim_selector}.private",
        "The DKIM private key (PEM), readable by vmail_user; 'chatmail-relay dkim-key' makes "
        "it and prints the TXT record.",
        parse_path,
    )
    dkim_sign: bool | None = key(
        "",
        "Sign outgoing mail (true/false); empty: true for a domain relay, false for an IP-only "
        "relay, which has no DNS to publish a key in.",
        parse_optional_bool,
    )
    dkim_verify: bool | None = key(
        "",
        "Refuse incoming mail without a valid DKIM signature of its From: domain (true/false); "
        "empty: true for a domain relay, false for an IP-only relay.",
        parse_optional_bool,
    )
    dkim_dns_resolver: tuple[str, int] | None = key(
        "",
        "DNS resolver for DKIM keys, IP or IP:PORT; empty: the system's (/etc/resolv.conf).",
        parse_resolver,
    )
    dkim_dns_timeout: float = key(
        "5", "Seconds to wait for a DKIM key lookup; a timeout defers the mail (4xx).", parse_float
    )
    notification_url: str = key(
        "https://notifications.delta.chat/notify",
        "Push gateway: each notification is a POST of one device token to this URL.",
        heading="Push notifications",
    )
    notification_queue_dir: Path = key(
        "/home/vmail/notifications/{mail_domain}",
        "Directory of the notifications waiting for the push gateway (one file each), "
        "writable by vmail_user.",
        parse_path,
    )
    app_versions_path: Path = key(
        "/etc/chatmail/appversions",
        "File of client app versions served to clients (GETMETADATA appversions); none when "
        "it is absent.",
        parse_path,
    )
    disable_ipv6: bool = key(
        "false", "Set to true on hosts without IPv6.", parse_bool, heading="Deployment"
    )
    acme_email: str = key("", "Contact address given to the certificate authority.")
    tls_external_cert_and_key: tuple[Path, Path] | None = key(
        "",
        "TLS certificate and key managed outside the relay, as two absolute paths: CERT KEY "
        "(empty: none).",
        parse_cert_and_key,
    )
    iroh_relay: str | None = key(
        "https://iroh.{mail_domain}",
        "URL of the iroh relay offered to clients; set it empty to offer none.",
        parse_optional_str,
    )
    turn_socket_path: Path = key(
        "/run/chatmail-turn/turn.socket", "Socket of the TURN credentials service.", parse_path
    )
    mtail_address: str = key("", "Address where mtail serves metrics; empty disables it.")
    www_folder: str = key("", "Directory of the relay's web pages; empty uses the built-in ones.")
    imap_rawlog: bool = key(
        "false",
        "Record IMAP sessions per mailbox (debugging only; files grow).",
        parse_bool,
        heading="Debugging",
    )
    imap_compress: bool = key("false", "Offer IMAP COMPRESS=DEFLATE.", parse_bool)
    privacy_postal: str = key(
        "", "Postal address of the privacy contact.", heading="Privacy policy"
    )
    privacy_mail: str = key("", "E-mail address of the privacy contact.")
    privacy_pdo: str = key("", "Postal address of the data protection officer.")
    privacy_supervisor: str = key("", "Postal address of the supervisory authority.")

    @property
    def is_ip_relay(self) -> bool:
        return is_ipv4(self.mail_domain)

    @property
    def signs_dkim(self) -> bool:
        return (not self.is_ip_relay) if self.dkim_sign is None else self.dkim_sign

    @property
    def verifies_dkim(self) -> bool:
        return (not self.is_ip_relay) if self.dkim_verify is None else self.dkim_verify

    @property
    def addr_domain(self) -> str:
        """The domain as it appears in addresses: ``[192.0.2.1]`` for an IP-only relay."""
        return f"[{self.mail_domain}]" if self.is_ip_relay else self.mail_domain


def settings_from(cls: type[T], cfg: Config) -> T:
    """Build a daemon's small settings dataclass from the chatmail.ini fields of the same names."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _keys() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


KNOWN_KEYS = frozenset(f.name for f in _keys())
# Keys existing relays write that nothing here uses (filtermail's extra ports, the passdb file of
# older releases): accepted without a word, so a relay's file loads as it is.
SILENT_KEYS = frozenset(
    {"filtermail_http_port_incoming", "filtermail_lmtp_port_transport", "passdb_path"}
)
# Keys existing relays dropped in their 1.11 release: ignored, and said so once per parse.
REMOVED_KEYS = ("passthrough_recipients", "passthrough_senders")


def _warn_unused_keys(names: set[str], path: Path) -> None:
    removed = [name for name in REMOVED_KEYS if name in names]
    if removed:
        log.warning(
            "%s: %s in [%s] ignored: removed in chatmail relay 1.11, delete to silence this",
            path,
            ", ".join(removed),
            SECTION,
        )
    for name in sorted(names - KNOWN_KEYS - SILENT_KEYS - set(REMOVED_KEYS)):
        log.warning("%s: unknown key %r in [%s] is ignored", path, name, SECTION)


def parse(text: str, path: Path | str = "chatmail.ini") -> Config:
    """Parse chatmail.ini text; raise ConfigError naming file, key and value."""
    path = Path(path)
    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not an ini file: {exc}") from None
    if not ini.has_section(SECTION):
        raise ConfigError(f"{path}: no [{SECTION}] section")
    raw = dict(ini.items(SECTION))
    _warn_unused_keys(set(raw), path)

    values: dict[str, object] = {"path": path}
    for f in _keys():  # mail_domain comes first: other defaults refer to it
        text_value = raw.get(f.name)
        if text_value is None:
            default = f.metadata["default"]
            if default is None:
                raise ConfigError(f"{path}: required key {f.name!r} is missing in [{SECTION}]")
            text_value = default.format(
                mail_domain=values.get("mail_domain", ""),
                dkim_selector=raw.get("dkim_selector", "opendkim").strip(),
            )
        try:
            values[f.name] = f.metadata["parse"](text_value)
        except ValueError as exc:
            raise ConfigError(
                f"{path}: key {f.name!r} has bad value {text_value!r}: {exc}"
            ) from None
    _check_consistency(values, path)
    return Config(**values)


def _check_consistency(values: dict[str, object], path: Path) -> None:
    """Rules between keys, and ranges a single parser cannot know."""

    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: key {name!r} has bad value {values[name]!r}: {why}")

    for name, value in values.items():
        if name.endswith("_port") and not 1 <= value <= 65535:  # type: ignore[operator]
            raise bad(name, "a port is between 1 and 65535")
    if not 1 <= values["username_min_length"] <= values["username_max_length"]:  # type: ignore[operator]
        raise bad("username_min_length", "must be at least 1 and not above username_max_length")
    if values["username_max_length"] > 64:  # type: ignore[operator]
        raise bad("username_max_length", "a local part has at most 64 characters (RFC 5321)")
    for name in ("max_imap_connections", "max_smtp_connections"):
        if values[name] < 1:  # type: ignore[operator]
            raise bad(name, "must be at least 1")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", values["dkim_selector"]):  # type: ignore[arg-type]
        raise bad("dkim_selector", "a DKIM selector is one DNS label: a-z, 0-9 and -")
    if not 0 < values["dkim_dns_timeout"] <= 60:  # type: ignore[operator]
        raise bad("dkim_dns_timeout", "must be above 0 and at most 60 seconds")
    if not values["vmail_user"]:
        raise bad("vmail_user", "must name a unix user")


def load(path: Path | str) -> Config:
    """Read and parse chatmail.ini at ``path`` (kept absolute: daemons get it passed on)."""
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse(text, path)


def default_ini(mail_domain: str) -> str:
    """A commented chatmail.ini for ``mail_domain`` listing every key at its default."""
    try:
        mail_domain = parse_domain(mail_domain)
    except ValueError as exc:
        raise ConfigError(f"mail domain {mail_domain!r}: {exc}") from None
    lines = [
        "# chatmail.ini: settings of a chatmail relay.",
        "# Every key below is at its default except mail_domain; edit and restart the relay.",
        "",
        f"[{SECTION}]",
    ]
    for f in _keys():
        if f.metadata["heading"]:
            lines += ["", f"## {f.metadata['heading']}"]
        lines += ["", f"# {f.metadata['doc']}"]
        default = f.metadata["default"]
        value = (
            mail_domain
            if default is None
            else default.format(mail_domain=mail_domain, dkim_selector="opendkim")
        )
        lines.append(f"{f.name} = {value}".rstrip())
    return "\n".join(lines) + "\n"


def write_default(mail_domain: str, path: Path | str) -> Path:
    """Write a default chatmail.ini; refuse to overwrite an existing file.

    The file is 0644 whatever the umask: the daemons read it as the vmail user, and it holds
    no secrets.
    """
    path = Path(path)
    text = default_ini(mail_domain)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fp:
        os.fchmod(fp.fileno(), 0o644)  # open() applied the umask to the mode
        fp.write(text)
    return path
