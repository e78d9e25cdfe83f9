"""Who may create an account, how Dovecot's passdb key is split, login days."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import psutil
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmaild import config
from chatmaild.config import settings_from
from chatmaild.mailbox import DAY, login_day
from doveauth.auth import split_passdb_key
from doveauth.policy import (
    PASSWORD_MAX_BYTES,
    CreationRules,
    Measurements,
    ResourceLimits,
    measure,
    refusal,
    resource_refusal,
)

RULES = CreationRules(
    addr_domain="example.org", username_min_length=9, username_max_length=9, password_min_length=9
)
IP_RULES = CreationRules(
    addr_domain="[127.0.0.1]", username_min_length=9, username_max_length=9, password_min_length=9
)
GOOD_ADDR = "abcdefghi@example.org"
GOOD_PASSWORD = "correct-horse"
NON_UTF8 = b"\xff".decode("utf-8", "surrogateescape")


# -- refusal -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "addr", "password", "reason"),
    [
        (RULES, "abcdefghi@other.org", GOOD_PASSWORD, "domain is not example.org"),
        (RULES, "abcdefghi@sub.example.org", GOOD_PASSWORD, "domain is not example.org"),
        (RULES, "abcdefghi@[127.0.0.1]", GOOD_PASSWORD, "domain is not example.org"),
        (IP_RULES, "abcdefghi@127.0.0.1", GOOD_PASSWORD, "domain is not [127.0.0.1]"),
        (IP_RULES, "abcdefghi@example.org", GOOD_PASSWORD, "domain is not [127.0.0.1]"),
        (RULES, "abcdefgh@example.org", GOOD_PASSWORD, "username shorter than 9"),
        (RULES, "a@example.org", GOOD_PASSWORD, "username shorter than 9"),
        (RULES, "abcdefghij@example.org", GOOD_PASSWORD, "username longer than 9"),
        (RULES, "ABCDEFGHI@example.org", GOOD_PASSWORD, "invalid address"),
        (RULES, "abcd/efgh@example.org", GOOD_PASSWORD, "invalid address"),
        (RULES, "abcd+efgh@example.org", GOOD_PASSWORD, "invalid address"),
        (RULES, ".abcdefgh@example.org", GOOD_PASSWORD, "invalid address"),
        (RULES, "abc..efgh@example.org", GOOD_PASSWORD, "invalid address"),
        (RULES, "abcdefghi", GOOD_PASSWORD, "invalid address"),
        (RULES, "abcdefghi@example.org@x", GOOD_PASSWORD, "invalid address"),
        (RULES, "abcdefgh\udcff@example.org", GOOD_PASSWORD, "invalid address"),
        (RULES, GOOD_ADDR, "", "password shorter than 9"),
        (RULES, GOOD_ADDR, "12345678", "password shorter than 9"),
        (RULES, GOOD_ADDR, "x" * (PASSWORD_MAX_BYTES + 1), f"longer than {PASSWORD_MAX_BYTES}"),
        (RULES, GOOD_ADDR, "ä" * 129, f"longer than {PASSWORD_MAX_BYTES} bytes"),  # 258 bytes
        (RULES, GOOD_ADDR, "password\0with-nul", "NUL"),
        (RULES, GOOD_ADDR, "\0" * 9, "NUL"),
        (RULES, GOOD_ADDR, "long-enough" + NON_UTF8, "not UTF-8"),
        (RULES, GOOD_ADDR, NON_UTF8 * 9, "not UTF-8"),
    ],
)
def test_refusal_names_the_reason(rules, addr, password, reason):
    result = refusal(rules, addr, password)
    assert result is not None
    assert reason in result


@pytest.mark.parametrize(
    ("rules", "addr", "password"),
    [
        (RULES, GOOD_ADDR, GOOD_PASSWORD),
        (RULES, "159shzhkb@example.org", "klz\"hl\\t64'qkcolkyk4h5e"),
        (RULES, "a.b-c_d.e@example.org", "123456789"),
        (RULES, GOOD_ADDR, "x" * PASSWORD_MAX_BYTES),
        (RULES, GOOD_ADDR, "ä" * 128),  # exactly 256 bytes
        (RULES, GOOD_ADDR, "pässwörd✓"),
        (IP_RULES, "abcdefghi@[127.0.0.1]", GOOD_PASSWORD),
    ],
)
def test_refusal_allows_a_good_first_login(rules, addr, password):
    assert refusal(rules, addr, password) is None


def test_creation_rules_of_an_ip_relay_use_the_bracketed_domain():
    cfg = config.parse("[params]\nmail_domain = 127.0.0.1\n")
    assert settings_from(CreationRules, cfg) == IP_RULES
    assert (
        refusal(settings_from(CreationRules, cfg), "abcdefghi@[127.0.0.1]", GOOD_PASSWORD) is None
    )


def test_creation_rules_from_config_take_the_configured_lengths():
    cfg = config.parse(
        "[params]\nmail_domain = example.org\nusername_min_length = 3\n"
        "username_max_length = 20\npassword_min_length = 12\n"
    )
    rules = settings_from(CreationRules, cfg)
    assert rules == CreationRules("example.org", 3, 20, 12)
    assert refusal(rules, "abc@example.org", "x" * 12) is None
    assert "password shorter than 12" in refusal(rules, "abc@example.org", "x" * 11)


# -- resource_refusal ----------------------------------------------------------------------------

LIMITS = ResourceLimits(
    nocreate_file=Path("/etc/chatmail-nocreate"),
    mailboxes_dir=Path("/home/vmail/mail/example.org"),
    max_load_1m=5.0,
    min_available_memory=200 * 1024**2,
    min_free_disk_space=1024**3,
)
FINE = Measurements(
    nocreate_exists=False, load_1m=0.5, available_memory=4 * 1024**3, free_disk=50 * 1024**3
)


def _with(**changes) -> Measurements:
    return dataclasses.replace(FINE, **changes)


@pytest.mark.parametrize(
    ("measured", "reason"),
    [
        (_with(nocreate_exists=True), "/etc/chatmail-nocreate exists"),
        (_with(nocreate_exists=True, load_1m=99.0), "/etc/chatmail-nocreate exists"),
        (_with(load_1m=5.01), "max_load_1m"),
        (_with(load_1m=80.0), "load 80.00"),
        (_with(available_memory=200 * 1024**2 - 1), "min_available_memory"),
        (_with(available_memory=0), "available memory 0M"),
        (_with(free_disk=1024**3 - 1), "min_free_disk_space"),
        (_with(free_disk=0), "free disk 0M"),
    ],
)
def test_resource_refusal_names_the_exhausted_resource(measured, reason):
    result = resource_refusal(LIMITS, measured)
    assert result is not None
    assert reason in result


@pytest.mark.parametrize(
    "measured",
    [
        FINE,
        _with(load_1m=5.0),  # at the limit is not above it
        _with(available_memory=200 * 1024**2),
        _with(free_disk=1024**3),
    ],
)
def test_resource_refusal_allows_when_all_is_fine(measured):
    assert resource_refusal(LIMITS, measured) is None


def test_resource_limits_from_default_config():
    cfg = config.parse("[params]\nmail_domain = example.org\n")
    assert settings_from(ResourceLimits, cfg) == LIMITS


def test_measure_returns_plausible_values(tmp_path):
    limits = ResourceLimits(
        nocreate_file=tmp_path / "nocreate",
        mailboxes_dir=tmp_path / "mail" / "not-yet-created",
        max_load_1m=5.0,
        min_available_memory=0,
        min_free_disk_space=0,
    )
    m = measure(limits)
    assert m.nocreate_exists is False
    assert 0 <= m.load_1m < 10_000
    assert 0 < m.available_memory <= psutil.virtual_memory().total
    disk = shutil.disk_usage(tmp_path)
    assert 0 < m.free_disk <= disk.total
    assert not limits.mailboxes_dir.exists()  # measuring creates nothing

    (tmp_path / "nocreate").touch()
    assert measure(limits).nocreate_exists is True
    assert "nocreate exists" in resource_refusal(limits, measure(limits))


# -- split_passdb_key ----------------------------------------------------------------------------

OBSERVED_KEY = 'klz\\"hl\\\\t64\\\'qkcolkyk4h5e"159shzhkb@example.org'


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (OBSERVED_KEY, ("klz\"hl\\t64'qkcolkyk4h5e", "159shzhkb@example.org")),
        ('password"abcdefghi@example.org', ("password", "abcdefghi@example.org")),
        ('\\"quoted\\""a@b', ('"quoted"', "a@b")),
        ('ends-in\\\\"a@b', ("ends-in\\", "a@b")),
        ("it\\'s\"a@b", ("it's", "a@b")),
        ('"a@b', ("", "a@b")),
        ('password"', ("password", "")),
        ("pw\"o\\'brien@b", ("pw", "o'brien@b")),
        ('pä\tss"a@[127.0.0.1]', ("pä\tss", "a@[127.0.0.1]")),
    ],
)
def test_split_passdb_key(key, expected):
    assert split_passdb_key(key) == expected


@pytest.mark.parametrize(
    ("key", "user"),
    [
        ("", ""),
        ("abcdefghi@example.org", "abcdefghi@example.org"),
        ('escaped\\"quote-only', 'escaped"quote-only'),
        ("trailing\\", "trailing"),
    ],
)
def test_passdb_key_without_unescaped_quote_is_a_bare_user(key, user):
    # the password-less key the relay's first passdb asks: lookup only, never creation
    assert split_passdb_key(key) == (None, user)


@given(st.text())
def test_bare_user_key_inverts_dovecots_escaping(user):
    assert split_passdb_key(dovecot_escape(user)) == (None, user)


def dovecot_escape(text: str) -> str:
    """Dovecot's %E (str_escape): a backslash before \\, " and '."""
    return "".join("\\" + ch if ch in "\\\"'" else ch for ch in text)


_quoting = st.text(alphabet=st.sampled_from(['"', "'", "\\", "a", "@", "\t"]) | st.characters())


@settings(max_examples=500)
@given(_quoting, _quoting)
@example('"', '"')
@example("\\", "\\")
@example('a\\"b', "c'd")
@example("", "")
def test_split_passdb_key_inverts_dovecots_escaping(password, user):
    key = dovecot_escape(password) + '"' + dovecot_escape(user)
    assert split_passdb_key(key) == (password, user)


NOW = 1795696977.0  # 2026-11-26 12:42:57 UTC

# -- login_day -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("1795696977", 1795651200),
        ("1795651200", 1795651200),
        ("1795651199", 1795651200 - DAY),
        ("0", 0),
        ("86399", 0),
        ("86400", 86400),
    ],
)
def test_login_day_is_the_start_of_the_utc_day(value, day):
    assert login_day(value, NOW) == day


@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "-1795696977",
        "",
        "abc",
        "1.5",
        "1e9",
        "0x10",
        "None",
        " 5",
        "+5",
        "8_6400",
        "\u0661\u0662",
        "10" * 15,
    ],
)
def test_login_day_refuses_negative_or_garbage(value):
    with pytest.raises(ValueError):
        login_day(value, NOW)


def test_login_day_refuses_times_in_the_future():
    # a year-3000 login would keep the account from ever expiring
    assert login_day(str(int(NOW) + 3600), NOW) == int(NOW + 3600) // DAY * DAY
    with pytest.raises(ValueError, match="future"):
        login_day(str(int(NOW) + 2 * DAY), NOW)
    with pytest.raises(ValueError):
        login_day("32503680000", NOW)


@given(st.integers(min_value=0, max_value=int(NOW)))
def test_login_day_is_a_day_boundary_at_or_before_the_time(seconds):
    day = login_day(str(seconds), NOW)
    assert day % DAY == 0
    assert day <= seconds < day + DAY
