"""The relay renderer: what it writes for Dovecot and supervisord, and when it rewrites it."""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import re
import shlex
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild import config
from relay.render import (
    Layout,
    Ports,
    RenderError,
    RenderParams,
    code_digest,
    render,
    template_values,
)
from relay.values import TemplateValues

PARAMS = RenderParams(ports=Ports(imap=12345), vmail_uid=1234, bin_dir=Path("/x/bin"))


@pytest.fixture
def ini(tmp_path) -> Path:
    return config.write_default("chat.example.org", tmp_path / "chatmail.ini")


@pytest.fixture
def cfg(ini) -> config.Config:
    return config.load(ini)


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(tmp_path / "state")


def supervisord_sections(layout: Layout) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(layout.supervisord_conf.read_text())
    return parser


def setting(text: str, name: str) -> list[str]:
    """Every value of ``name = value`` lines in a Dovecot-style file."""
    return re.findall(rf"^\s*{re.escape(name)} = (.*)$", text, flags=re.MULTILINE)


def test_first_render_writes_all_files(cfg, layout):
    changed = render(cfg, layout, PARAMS)
    expected = [
        layout.dovecot_conf,
        layout.auth_dict_conf,
        layout.auth_create_conf,
        layout.supervisord_conf,
        layout.postfix_dir / "main.cf",
        layout.postfix_dir / "master.cf",
        layout.postfix_dir / "sender_login_maps",
        layout.postfix_run,
        layout.push_lua,
        layout.schedule_dir / "chatmail-expire",  # read by no cron there
    ]
    assert sorted(changed) == sorted(expected)
    for path in expected:
        assert path.is_file()
        mode = 0o755 if path == layout.postfix_run else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(layout.state_dir.stat().st_mode) == 0o755


def test_dovecot_conf_has_port_uid_and_paths(cfg, layout):
    render(cfg, layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    assert setting(text, "port") == ["12345", "993"]  # imap, imaps
    assert setting(text, "first_valid_uid") == ["1234"]
    assert setting(text, "last_valid_uid") == ["1234"]
    # passdb of existing accounts, passdb that creates, userdb
    assert setting(text, "args") == [
        str(layout.auth_dict_conf),
        str(layout.auth_create_conf),
        str(layout.auth_dict_conf),
    ]
    assert setting(text, "driver") == ["dict", "dict", "prefetch", "dict"]
    assert setting(text, "result_internalfail") == ["return-fail"]
    assert setting(text, "base_dir") == [str(layout.dovecot_base_dir)]
    assert setting(text, "state_dir") == [str(layout.dovecot_state_dir)]
    assert setting(text, "listen") == ["127.0.0.1"]


def test_dovecot_conf_records_logins_through_lastlogin(cfg, layout):
    render(cfg, layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    imap = re.search(r"protocol imap \{(.*?)\}", text, flags=re.DOTALL).group(1)
    assert "last_login" in setting(imap, "mail_plugins")[0].split()
    assert setting(text, "last_login_dict") == [f"proxy:{layout.lastlogin_socket}:lastlogin"]
    assert setting(text, "last_login_key") == ["last-login/%u"]


def test_dovecot_conf_serves_metadata_and_runs_the_push_hook_on_delivery(cfg, layout):
    render(cfg, layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    assert setting(text, "mail_attribute_dict") == [
        f"proxy:idle_msecs=10000:{layout.metadata_socket}:metadata"
    ]
    assert setting(text, "imap_metadata") == ["yes"]
    assert setting(text, "imap_capability") == ["+XDELTAPUSH XCHATMAIL"]
    lmtp = re.search(r"protocol lmtp \{(.*?)\}", text, flags=re.DOTALL).group(1)
    plugins = setting(lmtp, "mail_plugins")[0].split()
    assert {"mail_lua", "notify", "push_notification", "push_notification_lua"} <= set(plugins)
    assert setting(text, "push_notification_driver") == [f"lua:file={layout.push_lua}"]
    assert "/private/messagenew" in layout.push_lua.read_text()
    assert setting(text, "mail_server_admin") == []  # no privacy_mail: no admin contact


def block(text: str, header: str) -> str:
    """The body of the first ``header { ... }`` block (no nested blocks before its end)."""
    match = re.search(rf"^{re.escape(header)} \{{\n(.*?)^\}}", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"no {header} block"
    return match.group(1)


def with_mailbox_size(ini: Path, size: str) -> config.Config:
    ini.write_text(
        re.sub(r"(?m)^max_mailbox_size =.*$", f"max_mailbox_size = {size}", ini.read_text())
    )
    return config.load(ini)


def test_dovecot_conf_sets_the_quota_from_max_mailbox_size(cfg, layout):
    render(cfg, layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    assert cfg.max_mailbox_size == 500 * 1024 * 1024  # chatmail.ini's default, 500M
    assert setting(text, "quota") == ["maildir:User quota"]
    assert setting(text, "quota_rule") == ["*:storage=500M"]
    assert setting(text, "quota_grace") == ["0"]
    # at 90%, trim to 70% of 500 MiB = 350 MiB; %h is the account's home (its Maildir)
    assert setting(text, "quota_warning") == ["storage=90%% quota-warning 350 %h"]


def test_the_quota_warning_runs_chatmail_quota_expire_as_vmail(cfg, layout):
    render(cfg, layout, PARAMS)
    service = block(layout.dovecot_conf.read_text(), "service quota-warning")
    assert setting(service, "executable") == ["script /x/bin/chatmail-quota-expire"]
    assert setting(service, "user") == ["vmail", "vmail"]  # the script, then its socket
    assert "unix_listener quota-warning {" in service
    assert setting(service, "mode") == ["0600"]


def test_the_quota_plugin_is_loaded_before_any_protocol_block(cfg, layout):
    # a global mail_plugins after `protocol imap {}` would not reach imap (doveconf warns)
    render(cfg, layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    first = text.index("\nmail_plugins = $mail_plugins quota\n")
    assert first < text.index("\nprotocol imap {") and first < text.index("\nprotocol lmtp {")
    imap = block(text, "protocol imap")
    assert "imap_quota" in setting(imap, "mail_plugins")[0].split()  # GETQUOTAROOT


def test_a_full_mailbox_defers_mail_instead_of_bouncing_it(cfg, layout):
    render(cfg, layout, PARAMS)
    lmtp = block(layout.dovecot_conf.read_text(), "protocol lmtp")
    assert setting(lmtp, "quota_full_tempfail") == ["yes"]


@pytest.mark.parametrize(
    ("size", "rule", "target_mb"),
    [
        ("2M", "2M", 1),  # 70% of 2 MiB is 1.4 MiB: whole MiB, rounded down
        ("1G", "1G", 716),
        ("31457280", "30M", 21),
        ("2560K", "2560k", 1),
        ("2097153", "2097153b", 1),
    ],
)
def test_max_mailbox_size_renders_in_a_unit_dovecot_reads(ini, layout, size, rule, target_mb):
    render(with_mailbox_size(ini, size), layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    assert setting(text, "quota_rule") == [f"*:storage={rule}"]
    assert setting(text, "quota_warning") == [f"storage=90%% quota-warning {target_mb} %h"]


@pytest.mark.parametrize("size", ["1M", "2047K", "0"])
def test_a_mailbox_size_too_small_to_trim_in_whole_megabytes_is_refused(ini, layout, size):
    with pytest.raises(RenderError, match="max_mailbox_size"):
        render(with_mailbox_size(ini, size), layout, PARAMS)
    assert not layout.dovecot_conf.exists()


def test_the_admin_contact_is_privacy_mail(ini, layout):
    ini.write_text(
        re.sub(
            r"(?m)^privacy_mail =.*$", "privacy_mail = privacy@chat.example.org", ini.read_text()
        )
    )
    render(config.load(ini), layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    assert setting(text, "mail_server_admin") == ["mailto:privacy@chat.example.org"]


def test_an_admin_contact_that_is_no_address_is_refused(ini, layout):
    ini.write_text(re.sub(r"(?m)^privacy_mail =.*$", "privacy_mail = x y", ini.read_text()))
    with pytest.raises(RenderError, match="privacy_mail"):
        render(config.load(ini), layout, PARAMS)


def test_auth_worker_runs_as_vmail_user(cfg, layout):
    render(cfg, layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    block = re.search(r"service auth-worker \{(.*?)\}", text, flags=re.DOTALL)
    assert block is not None
    assert setting(block.group(1), "user") == ["vmail"]


def test_auth_dict_confs_point_at_doveauth_and_only_creation_sends_the_password(cfg, layout):
    render(cfg, layout, PARAMS)
    lookup = layout.auth_dict_conf.read_text()
    create = layout.auth_create_conf.read_text()
    assert setting(lookup, "uri") == [f"proxy:idle_msecs=60000:{layout.doveauth_socket}:auth"]
    assert setting(lookup, "password_key") == ["passdb/%Eu"]
    assert setting(create, "uri") == [
        f"proxy:idle_msecs=60000:warn_slow_msecs=30000:{layout.doveauth_socket}:auth"
    ]
    assert setting(create, "password_key") == ['passdb/%Ew"%Eu']
    for text in (lookup, create):
        assert setting(text, "user_key") == ["userdb/%Eu"]
        assert setting(text, "iterate_prefix") == ["userdb/"]


def test_supervisord_runs_dict_daemons_as_vmail_with_socket_and_config(cfg, layout, ini):
    render(cfg, layout, PARAMS)
    conf = supervisord_sections(layout)
    for name, socket in (
        ("doveauth", layout.doveauth_socket),
        ("lastlogin", layout.lastlogin_socket),
    ):
        section = conf[f"program:{name}"]
        assert shlex.split(section["command"]) == [f"/x/bin/{name}", str(socket), str(ini)]
        assert section["user"] == "vmail"
    dovecot = conf["program:dovecot"]
    assert shlex.split(dovecot["command"]) == [
        "/usr/sbin/dovecot",
        "-F",
        "-c",
        str(layout.dovecot_conf),
    ]
    assert "user" not in dovecot  # Dovecot starts as root and drops privileges itself
    assert conf["unix_http_server"]["file"] == str(layout.supervisor_socket)
    assert conf["supervisorctl"]["serverurl"] == f"unix://{layout.supervisor_socket}"


def test_doveauth_serves_the_socket_dovecot_asks(cfg, layout):
    render(cfg, layout, PARAMS)
    command = shlex.split(supervisord_sections(layout)["program:doveauth"]["command"])
    for conf in (layout.auth_dict_conf, layout.auth_create_conf):
        (uri,) = setting(conf.read_text(), "uri")
        assert uri.startswith("proxy:") and uri.endswith(f":{command[1]}:auth")


def test_rendering_twice_changes_nothing(cfg, layout):
    render(cfg, layout, PARAMS)
    before = {p: p.stat().st_mtime_ns for p in layout.state_dir.rglob("*") if p.is_file()}
    assert render(cfg, layout, PARAMS) == []
    after = {p: p.stat().st_mtime_ns for p in layout.state_dir.rglob("*") if p.is_file()}
    assert after == before


def test_changed_chatmail_ini_changes_supervisord_conf(ini, layout):
    render(config.load(ini), layout, PARAMS)
    old = layout.supervisord_conf.read_text()
    ini.write_text(ini.read_text() + "# an operator's note\n")
    changed = render(config.load(ini), layout, PARAMS)
    assert changed == [layout.supervisord_conf]
    assert layout.supervisord_conf.read_text() != old


def test_changed_setting_changes_the_files_using_it(ini, layout):
    render(config.load(ini), layout, PARAMS)
    ini.write_text(ini.read_text().replace("vmail_user = vmail", "vmail_user = mailer"))
    changed = render(config.load(ini), layout, PARAMS)
    cron_file = layout.schedule_dir / "chatmail-expire"
    assert sorted(changed) == sorted([layout.dovecot_conf, layout.supervisord_conf, cron_file])
    conf = supervisord_sections(layout)
    assert conf["program:doveauth"]["user"] == "mailer"


def test_changed_port_rewrites_dovecot_conf_only(cfg, layout):
    render(cfg, layout, PARAMS)
    other = RenderParams(ports=Ports(imap=23456), vmail_uid=1234, bin_dir=Path("/x/bin"))
    assert render(cfg, layout, other) == [layout.dovecot_conf]
    assert setting(layout.dovecot_conf.read_text(), "port")[0] == "23456"


def test_ip_relay_renders(tmp_path, layout):
    ini = config.write_default("127.0.0.1", tmp_path / "ip.ini")
    render(config.load(ini), layout, PARAMS)
    assert "chatmail relay for 127.0.0.1" in layout.dovecot_conf.read_text()
    # addresses of an IP relay are name@[127.0.0.1]: Dovecot must accept [ and ] in user names
    (chars,) = setting(layout.dovecot_conf.read_text(), "auth_username_chars")
    assert "[" in chars
    assert "]" in chars


def test_missing_vmail_user_is_a_clear_error(tmp_path, layout):
    ini = tmp_path / "chatmail.ini"
    ini.write_text("[params]\nmail_domain = chat.example.org\nvmail_user = no-such-user-here\n")
    params = RenderParams(ports=Ports(imap=12345), bin_dir=Path("/x/bin"))
    with pytest.raises(RenderError, match="no-such-user-here"):
        render(config.load(ini), layout, params)
    assert not layout.dovecot_conf.exists()


def test_config_loaded_from_relative_path_is_passed_to_daemons_absolute(
    tmp_path, layout, monkeypatch
):
    # supervisord starts the daemons in the state directory (directory = <state_dir>), so a
    # relative chatmail.ini path in their command line would name a file that is not there.
    config.write_default("chat.example.org", tmp_path / "chatmail.ini")
    monkeypatch.chdir(tmp_path)
    render(config.load("chatmail.ini"), layout, PARAMS)
    command = shlex.split(supervisord_sections(layout)["program:doveauth"]["command"])
    assert command[2] == str(tmp_path / "chatmail.ini")


@pytest.mark.parametrize("bad", ["/tmp/with space", "/tmp/per%(cent)s", "relative/dir", "/x/'q'"])
def test_paths_that_configs_cannot_hold_literally_are_refused(cfg, bad):
    with pytest.raises(RenderError, match="state directory"):
        render(cfg, Layout(Path(bad)), PARAMS)


def test_daemons_restart_when_their_code_or_chatmail_ini_changes(cfg, layout):
    render(cfg, layout, PARAMS)
    conf = supervisord_sections(layout)
    env = conf["program:doveauth"]["environment"]
    assert code_digest() in env
    assert hashlib.sha256(cfg.path.read_bytes()).hexdigest() in env
    assert conf["supervisord"]["umask"] == "027"


# -- every value that reaches a template is checked ----------------------------------------------


def _values(cfg, layout, **changes) -> TemplateValues:
    return dataclasses.replace(template_values(cfg, layout, PARAMS), **changes)


def test_a_vmail_user_with_a_newline_cannot_add_a_supervisord_program(tmp_path, layout):
    ini = tmp_path / "chatmail.ini"
    ini.write_text(
        "[params]\nmail_domain = chat.example.org\n"
        "vmail_user = vmail\n  [program:evil]\n  command = /bin/sh -c id\n"
    )
    cfg = config.load(ini)
    assert "\n" in cfg.vmail_user  # configparser keeps continuation lines
    with pytest.raises(RenderError, match="vmail_user"):
        render(cfg, layout, PARAMS)
    assert not layout.supervisord_conf.exists()


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1\nssl = no", "localhost", "*", "", "1.2.3.4 5", "fe80::1%x\n}\nssl = no", "::01"],
)
def test_listen_address_must_be_an_ip_address(cfg, layout, listen):
    params = dataclasses.replace(PARAMS, listen=listen)
    with pytest.raises(RenderError, match="listen address"):
        render(cfg, layout, params)
    assert not layout.dovecot_conf.exists()


@pytest.mark.parametrize("listen", ["127.0.0.1", "::1", "192.0.2.7"])
def test_ip_listen_addresses_render(cfg, layout, listen):
    render(cfg, layout, dataclasses.replace(PARAMS, listen=listen))
    assert f"listen = {listen}" in layout.dovecot_conf.read_text()


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_imap_port_out_of_range_is_refused(cfg, layout, port):
    with pytest.raises(RenderError, match="IMAP port"):
        render(cfg, layout, dataclasses.replace(PARAMS, ports=Ports(imap=port)))


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(TemplateValues) if f.type in ("str", "Path")]
)
@pytest.mark.parametrize("junk", ["\n[program:x]", " %(here)s", "\0"])
def test_every_text_value_refuses_what_a_config_file_would_misread(cfg, layout, name, junk):
    good = getattr(template_values(cfg, layout, PARAMS), name)
    bad = type(good)(f"{good}{junk}") if good else junk
    with pytest.raises(RenderError):
        _values(cfg, layout, **{name: bad})


@given(text=st.text(min_size=1, max_size=40))
def test_checked_values_never_hold_a_line_break(text):
    fields = {f.name: f for f in dataclasses.fields(TemplateValues)}
    for name in ("vmail_user", "mail_domain", "listen"):
        problem = fields[name].metadata["check"](text)
        if problem is None:
            assert not set(text) & set("\n\r\0 %;{}\"'")


def test_max_imap_connections_sets_dovecots_process_and_client_limits(tmp_path, layout):
    ini = tmp_path / "chatmail.ini"
    ini.write_text("[params]\nmail_domain = chat.example.org\nmax_imap_connections = 321\n")
    render(config.load(ini), layout, PARAMS)
    text = layout.dovecot_conf.read_text()
    assert setting(text, "process_limit") == ["321"]  # service imap
    assert setting(text, "client_limit") == ["321"]  # service imap-login
    assert int(setting(text, "default_client_limit")[0]) > 321


# -- Postfix ----------------------------------------------------------------------------------


def postfix_services(layout: Layout) -> dict[str, list[str]]:
    """master.cf: each service line's first field -> its fields and its ``-o`` options."""
    services: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (layout.postfix_dir / "master.cf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            current.extend(line.split())
        else:
            current = line.split()
            services[current[0]] = current
    return services


def main_cf(layout: Layout) -> dict[str, str]:
    values = {}
    for line in (layout.postfix_dir / "main.cf").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" = ")
            values[name] = value
    return values


ALL_PORTS = Ports(imap=1143, imaps=1993, smtp=1025, submission=1587, submissions=1465)


def test_postfix_listens_on_the_chosen_ports_with_filters_before_the_queue(cfg, layout):
    render(cfg, layout, dataclasses.replace(PARAMS, ports=ALL_PORTS))
    services = postfix_services(layout)
    smtp, submission, submissions = (services[f"127.0.0.1:{port}"] for port in (1025, 1587, 1465))
    assert f"smtpd_proxy_filter=127.0.0.1:{cfg.filtermail_smtp_port_incoming}" in smtp
    assert "smtpd_tls_security_level=encrypt" in smtp
    assert "smtpd_sasl_auth_enable=yes" not in smtp
    for service in (submission, submissions):
        assert f"smtpd_proxy_filter=127.0.0.1:{cfg.filtermail_smtp_port}" in service
        assert "smtpd_sasl_auth_enable=yes" in service
        assert "smtpd_sender_restrictions=reject_sender_login_mismatch" in service
        assert service[6] == str(cfg.max_smtp_connections)  # maxproc: the connection limit
    assert "smtpd_tls_wrappermode=yes" in submissions
    assert "smtpd_tls_wrappermode=no" in submission
    for port in (cfg.postfix_reinject_port, cfg.postfix_reinject_port_incoming):
        reinject = services[f"127.0.0.1:{port}"]
        assert not any(o.startswith("smtpd_proxy_filter") for o in reinject)
        assert "smtpd_client_restrictions=permit_mynetworks,reject" in reinject
    # every service runs without a chroot: this private instance has none
    assert {fields[4] for fields in services.values()} == {"n"}


def test_postfix_delivers_locally_over_lmtp_and_limits_sizes(cfg, layout):
    render(cfg, layout, PARAMS)
    main = main_cf(layout)
    assert main["mydestination"] == "chat.example.org"
    assert main["local_transport"] == f"lmtp:unix:{layout.lmtp_socket}"
    assert main["message_size_limit"] == str(cfg.max_message_size)
    assert main["smtpd_sasl_path"] == str(layout.sasl_socket)
    assert main["queue_directory"] == str(layout.postfix_queue)
    assert main["maillog_file"] == "/dev/stdout"
    dovecot = layout.dovecot_conf.read_text()
    assert f"unix_listener {layout.lmtp_socket.name} {{" in dovecot
    assert f"unix_listener {layout.sasl_socket.name} {{" in dovecot


def test_an_ip_relay_delivers_to_its_address_literal(tmp_path, layout):
    cfg = config.load(config.write_default("192.0.2.1", tmp_path / "ip.ini"))
    render(cfg, layout, PARAMS)
    main = main_cf(layout)
    assert main["mydestination"] == "[192.0.2.1]"
    assert main["myhostname"] == "localhost"


def test_a_loopback_relay_sends_nothing_off_the_machine(cfg, layout):
    render(cfg, layout, PARAMS)
    main = main_cf(layout)
    assert main["default_transport"].startswith("error:")
    assert main["relay_transport"].startswith("error:")
    render(cfg, layout, dataclasses.replace(PARAMS, listen="192.0.2.7"))
    main = main_cf(layout)
    assert "default_transport" not in main
    assert main["smtp_tls_security_level"] == "encrypt"
    assert "192.0.2.7:25" in postfix_services(layout)


def test_tls_uses_the_operators_certificate_when_chatmail_ini_names_one(tmp_path, layout):
    ini = config.write_default("chat.example.org", tmp_path / "c.ini")
    text = ini.read_text().replace(
        "tls_external_cert_and_key =", "tls_external_cert_and_key = /etc/x/cert.pem /etc/x/key.pem"
    )
    ini.write_text(text)
    render(config.load(ini), layout, PARAMS)
    assert main_cf(layout)["smtpd_tls_chain_files"] == "/etc/x/key.pem, /etc/x/cert.pem"
    dovecot = layout.dovecot_conf.read_text()
    assert setting(dovecot, "ssl_cert") == ["</etc/x/cert.pem"]
    assert setting(dovecot, "ssl_key") == ["</etc/x/key.pem"]


def postfix_log_filter(layout) -> list[str]:
    """The command run-master pipes Postfix's log through."""
    script = layout.postfix_run.read_text()
    command = re.search(r">\(exec (.*?)\) 2>&1", script, flags=re.DOTALL).group(1)
    return shlex.split(command.replace("\\\n", " "))


def test_postfix_logs_pass_a_filter_that_drops_ip_addresses(cfg, layout):
    import subprocess

    render(cfg, layout, PARAMS)
    lines = [
        "postfix/smtpd[1]: connect from unknown[203.0.113.9]",
        "postfix/smtpd[1]: client=host.example[2001:db8::1], sasl_username=a@[192.0.2.1]",
        "postfix/lmtp[2]: to=<b@[192.0.2.1]>, relay=x[127.0.0.1]:24, status=sent",
        "postfix/master[3]: daemon started -- version 3.7.11",
    ]
    out = subprocess.run(
        postfix_log_filter(layout), input="\n".join(lines), capture_output=True, text=True
    ).stdout.splitlines()
    assert out == [
        "postfix/smtpd[1]: connect from unknown[IP]",
        "postfix/smtpd[1]: client=host.example[IP], sasl_username=a@[192.0.2.1]",
        "postfix/lmtp[2]: to=<b@[192.0.2.1]>, relay=x[IP]:24, status=sent",
        "postfix/master[3]: daemon started -- version 3.7.11",
    ]


def test_the_postfix_log_filter_passes_each_line_on_at_once(cfg, layout):
    """A line reaches the log while Postfix keeps its pipe open (no block buffering)."""
    import select
    import subprocess

    render(cfg, layout, PARAMS)
    proc = subprocess.Popen(
        postfix_log_filter(layout), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        for n in range(3):
            proc.stdin.write(f"postfix/smtpd[{n}]: connect from unknown[203.0.113.9]\n".encode())
            proc.stdin.flush()
            assert select.select([proc.stdout], [], [], 10)[0], "the line is held back"
            assert (
                proc.stdout.readline() == f"postfix/smtpd[{n}]: connect from unknown[IP]\n".encode()
            )
    finally:
        proc.stdin.close()
        proc.wait(10)
