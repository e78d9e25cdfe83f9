"""The rendered configuration is one the real tools accept: Dovecot's (doveconf), Postfix's
(postconf) and systemd's units for the daily expiry (systemd-analyze)."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from pathlib import Path

import pytest
from conftest import require_binary

from chatmaild import config
from relay.render import Layout, Ports, RenderParams, render

IMAP_PORT = 12345


def _vmail_user_and_uid() -> tuple[str, int]:
    """The vmail user if it exists, else the user running the tests (doveconf checks users)."""
    try:
        return "vmail", pwd.getpwnam("vmail").pw_uid
    except KeyError:
        uid = os.getuid()
        return pwd.getpwuid(uid).pw_name, uid


def _render(tmp_path: Path, domain: str, **more) -> Layout:
    user, uid = _vmail_user_and_uid()
    ini = config.write_default(domain, tmp_path / "chatmail.ini")
    if user != "vmail":
        ini.write_text(ini.read_text().replace("vmail_user = vmail", f"vmail_user = {user}"))
    layout = Layout(tmp_path / "state")
    params = RenderParams(
        ports=Ports(imap=IMAP_PORT), vmail_uid=uid, bin_dir=Path("/x/bin"), **more
    )
    render(config.load(ini), layout, params)
    return layout


def _doveconf(doveconf: str, conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [doveconf, "-n", "-c", str(conf)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("domain", ["chat.example.org", "127.0.0.1"])
def test_doveconf_accepts_the_rendered_dovecot_conf(tmp_path, domain):
    doveconf = require_binary("doveconf")
    layout = _render(tmp_path, domain)
    result = _doveconf(doveconf, layout.dovecot_conf)
    assert result.returncode == 0, result.stderr
    # doveconf -n prints the settings as Dovecot understood them
    assert f"port = {IMAP_PORT}" in result.stdout
    assert f"args = {layout.auth_dict_conf}" in result.stdout
    assert f"last_login_dict = proxy:{layout.lastlogin_socket}:lastlogin" in result.stdout
    assert f"first_valid_uid = {_vmail_user_and_uid()[1]}" in result.stdout
    # doveconf expands $mail_plugins: the plugin list of protocol imap must name last_login
    assert re.search(r"^\s*mail_plugins = .*\blast_login\b", result.stdout, flags=re.MULTILINE)
    # quota reaches both protocols: the global line comes before their blocks (else doveconf
    # warns that it "won't change the setting inside an earlier filter")
    assert "Warning" not in result.stderr, result.stderr
    imap = re.search(r"^protocol imap \{\n(.*?)^\}", result.stdout, re.DOTALL | re.MULTILINE)
    lmtp = re.search(r"^protocol lmtp \{\n(.*?)^\}", result.stdout, re.DOTALL | re.MULTILINE)
    assert 'mail_plugins = " quota imap_quota last_login"' in imap.group(1)
    assert re.search(r'mail_plugins = " quota .*push_notification_lua"', lmtp.group(1))
    assert "quota_full_tempfail = yes" in lmtp.group(1)
    # the quota warning's script runs as the vmail user (without `user =` it would run as root)
    service = subprocess.run(
        [doveconf, "-c", str(layout.dovecot_conf), "-h", "service/quota-warning/user"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert service.stdout.strip() == _vmail_user_and_uid()[0], service.stderr


def test_doveconf_check_is_not_vacuous(tmp_path):
    doveconf = require_binary("doveconf")
    layout = _render(tmp_path, "chat.example.org")
    broken = layout.dovecot_conf.with_name("broken.conf")
    broken.write_text(layout.dovecot_conf.read_text() + "\nno_such_dovecot_setting = 1\n")
    result = _doveconf(doveconf, broken)
    assert result.returncode != 0
    assert "no_such_dovecot_setting" in result.stderr


@pytest.mark.parametrize("domain", ["chat.example.org", "127.0.0.1"])
def test_postconf_knows_every_rendered_postfix_setting(tmp_path, domain):
    postconf = require_binary("postconf")
    layout = _render(tmp_path, domain)
    for args in (["-n"], ["-M"]):  # main.cf, then master.cf
        result = subprocess.run(
            [postconf, "-c", str(layout.postfix_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr, result.stderr  # e.g. an unknown parameter
    assert f"mydestination = {'[127.0.0.1]' if domain == '127.0.0.1' else domain}" in (
        subprocess.run(
            [postconf, "-c", str(layout.postfix_dir), "-n"], capture_output=True, text=True
        ).stdout
    )


def test_postconf_check_is_not_vacuous(tmp_path):
    postconf = require_binary("postconf")
    layout = _render(tmp_path, "chat.example.org")
    main = layout.postfix_dir / "main.cf"
    main.write_text(main.read_text() + "no_such_postfix_setting = 1\n")
    result = subprocess.run(
        [postconf, "-c", str(layout.postfix_dir), "-n"], capture_output=True, text=True
    )
    assert "no_such_postfix_setting" in result.stderr


def _verify_units(units: Path) -> subprocess.CompletedProcess:
    analyze = require_binary("systemd-analyze")
    return subprocess.run(
        [analyze, "verify", *(str(path) for path in sorted(units.iterdir()))],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_systemd_analyze_accepts_the_rendered_timer_and_service(tmp_path):
    """systemd-analyze verify works without systemd running (Debian's systemd package)."""
    units = tmp_path / "system"
    _render(tmp_path, "chat.example.org", scheduler="systemd", schedule_dir=units)
    result = _verify_units(units)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # no "unknown key", no ignored line
    (on_calendar,) = re.findall(
        r"^OnCalendar=(.*)$", (units / "chatmail-expire.timer").read_text(), re.M
    )
    calendar = subprocess.run(
        [require_binary("systemd-analyze"), "calendar", on_calendar],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"Normalized form: {on_calendar}" in calendar.stdout, calendar.stderr


def test_systemd_analyze_check_is_not_vacuous(tmp_path):
    units = tmp_path / "system"
    _render(tmp_path, "chat.example.org", scheduler="systemd", schedule_dir=units)
    timer = units / "chatmail-expire.timer"
    timer.write_text(re.sub(r"OnCalendar=.*", "OnCalendar=*-*-* 25:00:00", timer.read_text()))
    result = _verify_units(units)
    assert result.returncode != 0
    assert "OnCalendar" in result.stderr or "calendar" in result.stderr
