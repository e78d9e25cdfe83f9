"""chatmail.ini parsing: the defaults of existing relays, clear errors, and the default file."""

from __future__ import annotations

import configparser
import logging
import os
import re
import stat
from pathlib import Path

import pytest

from chatmaild import config
from chatmaild.config import Config, ConfigError

DOMAIN = "chat.example.org"
MINIMAL = f"[params]\nmail_domain = {DOMAIN}\n"

# The values of existing chatmail relays' chatmail.ini, as parsed.
EXPECTED_DEFAULTS = {
    "mail_domain": DOMAIN,
    "mailboxes_dir": Path(f"/home/vmail/mail/{DOMAIN}"),
    "vmail_user": "vmail",
    "nocreate_file": Path("/etc/chatmail-nocreate"),
    "username_min_length": 9,
    "username_max_length": 9,
    "password_min_length": 9,
    "max_user_send_per_minute": 60,
    "max_user_send_burst_size": 10,
    "max_mailbox_size": 500 * 1024**2,
    "max_message_size": 31457280,
    "max_imap_connections": 10000,
    "max_smtp_connections": 1000,
    "delete_mails_after": 20,
    "delete_large_after": 7,
    "delete_inactive_users_after": 90,
    "filtermail_smtp_port": 10080,
    "filtermail_smtp_port_incoming": 10081,
    "postfix_reinject_port": 10025,
    "postfix_reinject_port_incoming": 10026,
    "max_load_1m": 5.0,
    "min_available_memory": 200 * 1024**2,
    "min_free_disk_space": 1024**3,
    "disable_ipv6": False,
    "tls_external_cert_and_key": None,
    "dkim_selector": "opendkim",
    "dkim_key_path": Path("/etc/dkimkeys/opendkim.private"),
    "dkim_sign": None,
    "dkim_verify": None,
    "dkim_dns_resolver": None,
    "dkim_dns_timeout": 5.0,
    "iroh_relay": f"https://iroh.{DOMAIN}",
    "imap_rawlog": False,
    "imap_compress": False,
}


def write(tmp_path: Path, text: str, name: str = "chatmail.ini") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_DEFAULTS.items()))
def test_minimal_ini_gets_the_defaults_of_existing_relays(tmp_path, name, expected):
    cfg = config.load(write(tmp_path, MINIMAL))
    assert getattr(cfg, name) == expected


def test_load_records_the_path_it_read(tmp_path):
    path = write(tmp_path, MINIMAL)
    assert config.load(path).path == path


def test_dns_domain_is_not_an_ip_relay():
    cfg = config.parse(MINIMAL)
    assert not cfg.is_ip_relay
    assert cfg.addr_domain == DOMAIN


def test_mail_domain_is_lowercased():
    assert config.parse("[params]\nmail_domain = Chat.Example.ORG\n").mail_domain == DOMAIN


@pytest.mark.parametrize("written", ["1.2.3.4", "[1.2.3.4]"])
def test_ipv4_mail_domain_with_or_without_brackets_makes_an_ip_relay(written):
    cfg = config.parse(f"[params]\nmail_domain = {written}\n")
    assert cfg.is_ip_relay
    assert cfg.mail_domain == "1.2.3.4"
    assert cfg.addr_domain == "[1.2.3.4]"
    assert cfg.mailboxes_dir == Path("/home/vmail/mail/1.2.3.4")


def test_explicit_values_override_defaults():
    cfg = config.parse(
        MINIMAL
        + "max_mailbox_size = 2G\n"
        + "max_load_1m = 1.5\n"
        + "mailboxes_dir = /srv/mail\n"
        + "max_imap_connections = 500\n"
        + "max_smtp_connections = 200\n"
        + "iroh_relay = https://iroh.other.org\n"
        + "disable_ipv6 = yes\n"
    )
    assert cfg.max_mailbox_size == 2 * 1024**3
    assert cfg.max_load_1m == 1.5
    assert cfg.mailboxes_dir == Path("/srv/mail")
    assert cfg.max_imap_connections == 500
    assert cfg.max_smtp_connections == 200
    assert cfg.iroh_relay == "https://iroh.other.org"
    assert cfg.disable_ipv6 is True


def test_explicitly_empty_iroh_relay_means_disabled():
    # existing relays write "iroh_relay =" to offer no iroh relay; absent means the default
    assert config.parse(MINIMAL + "iroh_relay =\n").iroh_relay is None
    assert config.parse(MINIMAL).iroh_relay == f"https://iroh.{DOMAIN}"


def test_iroh_relay_default_documents_the_absent_value_not_empty():
    text = config.default_ini(DOMAIN)
    assert f"iroh_relay = https://iroh.{DOMAIN}\n" in text
    assert "empty means https://iroh" not in text


@pytest.mark.parametrize("sep", [" ", "\t", "   "])
def test_external_tls_cert_and_key_are_two_absolute_paths(sep):
    cfg = config.parse(MINIMAL + f"tls_external_cert_and_key = /etc/tls/c.pem{sep}/etc/tls/k.pem\n")
    assert cfg.tls_external_cert_and_key == (Path("/etc/tls/c.pem"), Path("/etc/tls/k.pem"))


def test_empty_external_tls_cert_and_key_is_not_set():
    assert config.parse(MINIMAL + "tls_external_cert_and_key =\n").tls_external_cert_and_key is None


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("/etc/tls/both.pem", "two absolute paths"),
        ("/etc/tls/c.pem /etc/tls/k.pem /etc/tls/extra.pem", "two absolute paths"),
        ("c.pem /etc/tls/k.pem", "certificate path 'c.pem' is not absolute"),
        ("/etc/tls/c.pem k.pem", "key path 'k.pem' is not absolute"),
    ],
)
def test_bad_external_tls_cert_and_key_is_a_clear_error(bad, why):
    with pytest.raises(ConfigError, match="tls_external_cert_and_key") as excinfo:
        config.parse(MINIMAL + f"tls_external_cert_and_key = {bad}\n")
    assert why in str(excinfo.value)
    assert bad in str(excinfo.value)


@pytest.mark.parametrize("name", ["max_imap_connections", "max_smtp_connections"])
def test_zero_connections_is_refused(name):
    with pytest.raises(ConfigError, match=name):
        config.parse(MINIMAL + f"{name} = 0\n")


def test_keys_existing_relays_write_but_nothing_uses_load_silently(caplog):
    text = (
        MINIMAL
        + "filtermail_http_port_incoming = 10082\n"
        + "filtermail_lmtp_port_transport = 10083\n"
        + "passdb_path = /home/vmail/passdb.sqlite\n"
    )
    with caplog.at_level(logging.WARNING, logger="chatmaild.config"):
        cfg = config.parse(text)
    assert caplog.records == []
    assert cfg == config.parse(MINIMAL)
    default = config.default_ini(DOMAIN)
    assert "filtermail_http_port_incoming" not in default
    assert "passdb_path" not in default


def test_removed_passthrough_keys_are_named_in_one_warning_and_ignored(caplog):
    text = MINIMAL + "passthrough_senders = a@x.org\npassthrough_recipients = @y.org\n"
    with caplog.at_level(logging.WARNING, logger="chatmaild.config"):
        cfg = config.parse(text, "/etc/chatmail.ini")
    (warning,) = caplog.records
    message = warning.getMessage()
    assert "/etc/chatmail.ini" in message
    assert "passthrough_senders" in message and "passthrough_recipients" in message
    assert "ignored" in message
    assert not hasattr(cfg, "passthrough_senders")
    assert not hasattr(cfg, "passthrough_recipients")


def test_one_removed_key_is_named_alone(caplog):
    with caplog.at_level(logging.WARNING, logger="chatmaild.config"):
        config.parse(MINIMAL + "passthrough_recipients =\n")
    (warning,) = caplog.records
    assert "passthrough_recipients" in warning.getMessage()
    assert "passthrough_senders" not in warning.getMessage()


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("mail_domain", "not a domain"),
        ("mail_domain", "-bad-.example.org"),
        ("mail_domain", "under_score.org"),
        ("username_min_length", "nine"),
        ("username_max_length", "-1"),
        ("password_min_length", "9.5"),
        ("max_message_size", "30MB-ish"),
        ("max_mailbox_size", "500X"),
        ("min_available_memory", "lots"),
        ("min_free_disk_space", "-1G"),
        ("max_load_1m", "high"),
        ("max_load_1m", "-2"),
        ("max_load_1m", "nan"),
        ("mailboxes_dir", "relative/mail"),
        ("nocreate_file", "chatmail-nocreate"),
        ("turn_socket_path", "turn.socket"),
        ("disable_ipv6", "maybe"),
        ("imap_rawlog", "2"),
        ("filtermail_smtp_port", "port"),
        ("max_imap_connections", "many"),
        ("max_smtp_connections", "-1"),
        ("delete_inactive_users_after", "90d"),
    ],
)
def test_bad_value_error_names_file_key_and_value(tmp_path, key, bad):
    text = MINIMAL if key != "mail_domain" else "[params]\n"
    path = write(tmp_path, text + f"{key} = {bad}\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert key in message
    assert bad in message


def test_missing_mail_domain_is_a_clear_error(tmp_path):
    path = write(tmp_path, "[params]\nusername_min_length = 9\n")
    with pytest.raises(ConfigError, match="mail_domain") as excinfo:
        config.load(path)
    assert str(path) in str(excinfo.value)
    assert "missing" in str(excinfo.value)


def test_missing_params_section_is_a_clear_error(tmp_path):
    path = write(tmp_path, "[other]\nmail_domain = chat.example.org\n")
    with pytest.raises(ConfigError, match=r"\[params\]") as excinfo:
        config.load(path)
    assert str(path) in str(excinfo.value)


def test_text_without_any_section_is_a_clear_error(tmp_path):
    path = write(tmp_path, "mail_domain = chat.example.org\n")
    with pytest.raises(ConfigError, match="not an ini file") as excinfo:
        config.load(path)
    assert str(path) in str(excinfo.value)


def test_duplicate_key_is_a_clear_error(tmp_path):
    path = write(tmp_path, MINIMAL + "mail_domain = other.example.org\n")
    with pytest.raises(ConfigError) as excinfo:
        config.load(path)
    assert str(path) in str(excinfo.value)


def test_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "absent.ini"
    with pytest.raises(ConfigError, match="cannot read") as excinfo:
        config.load(path)
    assert str(path) in str(excinfo.value)


def test_directory_instead_of_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read") as excinfo:
        config.load(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "chatmail.ini"
    path.write_bytes(MINIMAL.encode() + b"privacy_postal = Stra\xdfe 1\n")
    with pytest.raises(ConfigError, match="UTF-8") as excinfo:
        config.load(path)
    assert str(path) in str(excinfo.value)


def test_unknown_key_logs_a_warning_naming_it_and_parsing_succeeds(tmp_path, caplog):
    path = write(tmp_path, MINIMAL + "no_such_setting = 1\n")
    with caplog.at_level(logging.WARNING, logger="chatmaild.config"):
        cfg = config.load(path)
    assert cfg.mail_domain == DOMAIN
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "no_such_setting" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


def test_known_keys_log_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="chatmaild.config"):
        config.parse(config.default_ini(DOMAIN))
    assert caplog.records == []


def test_config_is_immutable():
    cfg = config.parse(MINIMAL)
    with pytest.raises(AttributeError):
        cfg.mail_domain = "other.org"  # type: ignore[misc]


# -- the default file ----------------------------------------------------------------------------


def test_default_ini_round_trips_to_all_defaults():
    # mind iroh_relay: the default file must not turn the absent default into "disabled"
    from_default = config.parse(config.default_ini(DOMAIN))
    from_minimal = config.parse(MINIMAL)
    assert from_default == from_minimal
    for name, expected in EXPECTED_DEFAULTS.items():
        assert getattr(from_default, name) == expected, name


def test_default_ini_for_ip_relay_round_trips():
    cfg = config.parse(config.default_ini("[192.0.2.1]"))
    assert cfg.is_ip_relay
    assert cfg.addr_domain == "[192.0.2.1]"
    assert cfg.mailboxes_dir == Path("/home/vmail/mail/192.0.2.1")


def test_default_ini_lists_every_known_key_once():
    text = config.default_ini(DOMAIN)
    assigned = re.findall(r"^(\w+) =", text, flags=re.MULTILINE)
    assert sorted(assigned) == sorted(config.KNOWN_KEYS)
    assert set(config.KNOWN_KEYS) >= set(EXPECTED_DEFAULTS)


def test_default_ini_documents_every_key():
    lines = config.default_ini(DOMAIN).splitlines()
    for name in config.KNOWN_KEYS:
        (index,) = [i for i, line in enumerate(lines) if line.startswith(f"{name} =")]
        assert lines[index - 1].startswith("# "), name


def test_default_ini_refuses_a_bad_domain():
    with pytest.raises(ValueError):
        config.default_ini("not a domain")


def test_write_default_writes_a_loadable_file(tmp_path):
    path = config.write_default(DOMAIN, tmp_path / "chatmail.ini")
    cfg = config.load(path)
    assert isinstance(cfg, Config)
    assert cfg.mail_domain == DOMAIN
    assert path.read_text() == config.default_ini(DOMAIN)


def test_write_default_is_readable_by_the_daemons_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        path = config.write_default(DOMAIN, tmp_path / "chatmail.ini")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_default_refuses_to_overwrite(tmp_path):
    path = write(tmp_path, "[params]\nmail_domain = mine.example.org\n# operator's edits\n")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        config.write_default(DOMAIN, path)
    assert path.read_bytes() == before


# -- value parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("31457280", 31457280),
        ("1K", 1024),
        ("500M", 500 * 1024**2),
        ("500m", 500 * 1024**2),
        ("500MB", 500 * 1024**2),
        ("1G", 1024**3),
        ("2T", 2 * 1024**4),
        (" 1 G ", 1024**3),
    ],
)
def test_sizes_use_binary_units_as_dovecot_does(text, expected):
    assert config.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1M", "1P", "1 G B", "0x10"])
def test_malformed_sizes_are_refused(text):
    with pytest.raises(ValueError):
        config.parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("Yes", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("NO", False),
        ("0", False),
        ("off", False),
        ("", False),
    ],
)
def test_booleans(text, expected):
    assert config.parse_bool(text) is expected


def test_booleans_are_the_words_configparser_knows():
    for word, value in configparser.ConfigParser.BOOLEAN_STATES.items():
        assert config.parse_bool(word.upper()) is value


def test_bad_boolean_error_lists_the_accepted_words():
    with pytest.raises(ValueError) as excinfo:
        config.parse_bool("maybe")
    for word in configparser.ConfigParser.BOOLEAN_STATES:
        assert word in str(excinfo.value)


def test_dkim_defaults_to_on_for_a_domain_relay_and_off_for_an_ip_relay():
    domain = config.parse(MINIMAL)
    assert (domain.signs_dkim, domain.verifies_dkim) == (True, True)
    ip = config.parse("[params]\nmail_domain = 192.0.2.1\n")
    assert (ip.signs_dkim, ip.verifies_dkim) == (False, False)
    forced = config.parse("[params]\nmail_domain = 192.0.2.1\ndkim_sign = true\n")
    assert forced.signs_dkim and not forced.verifies_dkim
    off = config.parse(MINIMAL + "dkim_verify = false\n")
    assert off.signs_dkim and not off.verifies_dkim


def test_dkim_key_path_follows_the_selector():
    cfg = config.parse(MINIMAL + "dkim_selector = chat2024\n")
    assert cfg.dkim_key_path == Path("/etc/dkimkeys/chat2024.private")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5300", ("::1", 5300)),
    ],
)
def test_dkim_dns_resolver(text, expected):
    assert config.parse(MINIMAL + f"dkim_dns_resolver = {text}\n").dkim_dns_resolver == expected


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("dkim_dns_resolver = dns.example.org", "dkim_dns_resolver"),
        ("dkim_dns_resolver = 127.0.0.1:0", "dkim_dns_resolver"),
        ("dkim_selector = a.b", "dkim_selector"),
        ("dkim_selector = -x", "dkim_selector"),
        ("dkim_dns_timeout = 0", "dkim_dns_timeout"),
        ("dkim_sign = maybe", "dkim_sign"),
    ],
)
def test_bad_dkim_values_name_the_key(line, name):
    with pytest.raises(config.ConfigError, match=name):
        config.parse(MINIMAL + line + "\n")
