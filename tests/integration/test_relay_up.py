"""The README's first command's code path: chatmail-relay init/up/status/down, then an IMAP login.

Runs the installed ``chatmail-relay`` console script as ``./relay.sh up`` does, but with its own
state directory, chatmail.ini and port, for an IP-only relay (addresses like name@[127.0.0.1]).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers_env import free_port, require_binary, require_root
from relays import chatmail_relay, free_port_args, loopback_ports_ini, relaxed_ini

PROGRAMS = {
    "doveauth",
    "lastlogin",
    "dovecot",
    "postfix",
    "filtermail-outgoing",
    "filtermail-incoming",
    "metadata",
}


run = chatmail_relay


@pytest.fixture
def setup():
    require_root()
    for binary in ("dovecot", "supervisord", "supervisorctl"):
        require_binary(binary)
    tmp = Path(tempfile.mkdtemp(prefix="chatmail-up-"))
    tmp.chmod(0o755)
    ini = tmp / "chatmail.ini"
    state = tmp / "state"
    yield tmp, ini, state
    run("down", "--state-dir", str(state))
    shutil.rmtree(tmp, ignore_errors=True)


def test_up_login_status_down(setup):
    tmp, ini, state = setup
    assert run("init", "127.0.0.1", str(ini)).returncode == 0
    text = ini.read_text()
    assert "mail_domain = 127.0.0.1" in text
    ini.write_text(relaxed_ini(text, tmp))
    port_args = free_port_args()
    port = int(port_args[1])
    cron_d = tmp / "cron.d"  # not the machine's: a test installs nothing
    args = (
        "--config",
        str(ini),
        "--state-dir",
        str(state),
        *port_args,
        "--schedule-dir",
        str(cron_d),
    )

    up = run("up", *args)
    assert up.returncode == 0, up.stderr
    addr = re.search(r"address:\s+(\S+)", up.stdout).group(1)
    password = re.search(r"password:\s+(\S+)", up.stdout).group(1)
    assert re.fullmatch(r"[a-z0-9]{9}@\[127\.0\.0\.1\]", addr)
    assert f"IMAP {port} (STARTTLS)" in up.stdout
    url = re.search(r"^dclogin:\S+$", up.stdout, flags=re.MULTILINE).group()
    imaps, submissions = port_args[3], port_args[9]
    assert url.startswith(f"dclogin:{addr}?p={password}&v=1&ih=127.0.0.1&ip={imaps}&is=ssl")
    assert url.endswith(f"&sh=127.0.0.1&sp={submissions}&ss=ssl&ic=3")
    assert "\u2588" in up.stdout or "\u2580" in up.stdout  # the QR code, in block characters
    assert re.search(
        rf"^  expiry    daily at \d\d:\d\d, rendered into {cron_d}/chatmail-expire only: "
        "nothing runs it$",
        up.stdout,
        flags=re.MULTILINE,
    ), up.stdout
    assert "Not yet" not in up.stdout
    assert (cron_d / "chatmail-expire").is_file()

    conn = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    assert conn.login(addr, password)[0] == "OK"
    conn.logout()
    assert (tmp / "mail" / addr / "password").exists()

    pid = (state / "supervisord.pid").read_text()
    again = run("up", *args)  # running it again is harmless: nothing restarts
    assert again.returncode == 0, again.stderr
    assert (state / "supervisord.pid").read_text() == pid

    status = run("status", "--state-dir", str(state)).stdout
    for program in PROGRAMS:
        assert re.search(rf"{program}\s+RUNNING", status), status
    with_config = run("status", "--state-dir", str(state), "--config", str(ini)).stdout
    assert "push notifications pending: 0 (in " in with_config, with_config
    assert f"expiry: no expiry run yet (log {state}/log/expire/expire.log)" in with_config
    assert not re.search(r"^cron\s", status, flags=re.MULTILINE)  # no cron for a test relay

    down = run("down", "--state-dir", str(state))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "not running" in run("status", "--state-dir", str(state)).stdout
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert not os.path.exists(state / "supervisord.pid")
    assert run("down", "--state-dir", str(state)).stdout.strip() == "was not running"


def test_up_restarts_when_chatmail_ini_changes(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    assert run("up", *args).returncode == 0
    before = pids(state)
    ini.write_text(ini.read_text() + "password_min_length = 12\n")
    assert run("up", *args).returncode == 0
    after = pids(state)
    # the daemons reading chatmail.ini restart; Dovecot keeps running (and its connections)
    assert after["doveauth"] != before["doveauth"]
    assert after["lastlogin"] != before["lastlogin"]
    assert after["dovecot"] == before["dovecot"]


def test_up_again_starts_what_was_stopped_and_ignores_a_stale_pidfile(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    assert run("up", *args).returncode == 0
    stop_program(state, "lastlogin")
    assert run("up", *args).returncode == 0
    assert set(pids(state)) == PROGRAMS

    assert run("down", "--state-dir", str(state)).returncode == 0
    (state / "supervisord.pid").write_text("1\n")  # after a reboot: someone else's pid
    assert "not running" in run("status", "--state-dir", str(state)).stdout
    assert run("up", *args).returncode == 0
    assert set(pids(state)) == PROGRAMS


def simple_relay_args(tmp: Path, ini: Path, state: Path) -> tuple[str, ...]:
    ini.write_text(
        f"[params]\nmail_domain = example.org\nmailboxes_dir = {tmp}/mail\n"
        f"nocreate_file = {tmp}/nocreate\n" + loopback_ports_ini(tmp)
    )
    schedule = ("--schedule-dir", str(tmp / "cron.d"))  # last: tests replace a port by index
    return ("--config", str(ini), "--state-dir", str(state), *free_port_args(), *schedule)


def stop_program(state: Path, name: str) -> None:
    """Stop one program as an operator would, behind up's back."""
    conf = str(state / "supervisord.conf")
    subprocess.run(["supervisorctl", "-c", conf, "stop", name], check=True, capture_output=True)


def pids(state: Path) -> dict[str, str]:
    status = run("status", "--state-dir", str(state)).stdout
    return dict(re.findall(r"^([\w-]+)\s+RUNNING\s+pid (\d+)", status, flags=re.MULTILINE))


def test_bad_chatmail_ini_is_reported_not_started(setup):
    tmp, ini, state = setup
    ini.write_text("[params]\nmail_domain = example.org\nmax_load_1m = lots\n")
    args = ("--config", str(ini), "--state-dir", str(state), "--schedule-dir", str(tmp / "cron.d"))
    result = run("up", *args)
    assert result.returncode == 1
    assert str(ini) in result.stderr and "max_load_1m" in result.stderr and "lots" in result.stderr
    assert not state.exists()


def test_up_applies_a_configuration_rendered_before(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    assert run("up", *args).returncode == 0
    dovecot = pids(state)["dovecot"]
    new_port = str(free_port())
    moved = (*args[:5], new_port, *args[6:])  # another --imap-port
    assert run("render", *moved).returncode == 0  # rendered, not yet applied
    result = run("up", *moved)
    assert result.returncode == 0, result.stderr
    assert f"IMAP {new_port} (STARTTLS)" in result.stdout
    assert pids(state)["dovecot"] == dovecot  # reloaded, not restarted


def test_up_starts_a_stopped_dovecot_whose_configuration_changed(setup):
    """The usual reason to run up again: Dovecot down (e.g. a bad setting), now fixed."""
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    assert run("up", *args).returncode == 0
    stop_program(state, "dovecot")
    ini.write_text(ini.read_text() + "max_imap_connections = 500\n")
    result = run("up", *args)
    assert result.returncode == 0, result.stderr
    assert set(pids(state)) == PROGRAMS
    assert "process_limit = 500" in (state / "dovecot" / "dovecot.conf").read_text()


def test_up_reloads_dovecot_only_when_its_configuration_changed(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    assert run("up", *args).returncode == 0
    log = state / "log" / "dovecot.log"
    assert run("up", *args).returncode == 0
    assert "SIGHUP received" not in log.read_text()  # a reload would drop logins in progress
    ini.write_text(ini.read_text() + "max_imap_connections = 500\n")
    assert run("up", *args).returncode == 0
    assert "SIGHUP received" in log.read_text()


def test_a_port_in_use_is_named_with_its_process(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    smtp_port = int(args[args.index("--smtp-port") + 1])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", smtp_port))
        taken.listen()
        result = run("up", *args)
    assert result.returncode == 1
    assert f"port {smtp_port} (smtp)" in result.stderr
    assert f"(pid {os.getpid()})" in result.stderr  # this test's process holds it
    assert "not running" in run("status", "--state-dir", str(state)).stdout


def certificate_served(port: int) -> bytes:
    ctx = ssl._create_unverified_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        ctx.wrap_socket(sock) as tls,
    ):
        return tls.getpeercert(binary_form=True)


def test_self_signed_certificate_is_made_once_and_kept(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    imaps = int(args[args.index("--imaps-port") + 1])
    submissions = int(args[args.index("--submissions-port") + 1])
    assert run("up", *args).returncode == 0
    cert = (state / "tls" / "cert.pem").read_bytes()
    served = certificate_served(imaps)
    assert served == certificate_served(submissions)  # Dovecot and Postfix: the same one
    assert run("down", "--state-dir", str(state)).returncode == 0
    assert run("up", *args).returncode == 0
    assert (state / "tls" / "cert.pem").read_bytes() == cert
    assert certificate_served(imaps) == served


def test_the_operators_own_certificate_is_used(setup):
    tmp, ini, state = setup
    args = simple_relay_args(tmp, ini, state)
    own = tmp / "own"
    own.mkdir()
    key, cert = str(own / "key.pem"), str(own / "cert.pem")
    openssl = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2")
    subprocess.run(
        [*openssl, "-subj", "/CN=example.org", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    ini.write_text(ini.read_text() + f"tls_external_cert_and_key = {own}/cert.pem {own}/key.pem\n")
    assert run("up", *args).returncode == 0
    pem = (own / "cert.pem").read_text()
    for name in ("--imaps-port", "--submissions-port"):
        served = certificate_served(int(args[args.index(name) + 1]))
        assert ssl.DER_cert_to_PEM_cert(served).split() == pem.split()
    assert not (state / "tls" / "cert.pem").exists()


def test_dkim_key_command_makes_the_key_once_and_prints_its_record(setup):
    tmp, ini, _state = setup
    key = tmp / "dkim" / "opendkim.private"
    ini.write_text(f"[params]\nmail_domain = example.org\ndkim_key_path = {key}\n")
    first = run("dkim-key", "--config", str(ini))
    assert first.returncode == 0, first.stderr
    assert f"wrote {key}" in first.stdout
    record = re.search(r"^opendkim\._domainkey\.example\.org\. TXT .*$", first.stdout, re.M)
    assert record and '"v=DKIM1; k=rsa; p=' in record.group()
    info = key.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (
        0,
        pwd.getpwnam("vmail").pw_gid,
        0o640,
    )  # filtermail signs as vmail
    again = run("dkim-key", "--config", str(ini))
    assert again.returncode == 0 and "wrote" not in again.stdout
    assert record.group() in again.stdout
