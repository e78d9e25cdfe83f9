"""doveauth driven over its Unix socket exactly as Dovecot's auth-worker drives it."""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import stat
import subprocess
import sys
import threading
from pathlib import Path

from daemons import start_daemon
from dictclient import DictClient

ADDR = "abcdefghi@example.org"
PASSWORD = "correct-horse-battery"


def found(reply: bytes) -> dict:
    assert reply.startswith(b"O"), reply
    return json.loads(reply[1:].decode())


def test_first_login_creates_account(doveauth):
    with DictClient(doveauth.socket) as c:
        reply = found(c.passdb(ADDR, PASSWORD))
    udir = doveauth.mailboxes / ADDR
    assert reply["password"].startswith("{SHA512-CRYPT}$6$")
    assert reply["password"] == (udir / "password").read_text()
    assert reply["userdb_home"] == str(udir)  # for Dovecot's prefetch userdb
    assert reply["userdb_uid"] == reply["userdb_gid"] == "vmail"
    assert (udir / "enforceE2EEincoming").exists()
    assert stat.S_IMODE((udir / "password").stat().st_mode) == 0o600
    assert f"created account {ADDR}" in doveauth.log_text()


def test_existing_account_returns_stored_hash_whatever_password(doveauth):
    with DictClient(doveauth.socket) as c:
        first = found(c.passdb(ADDR, PASSWORD))["password"]
        again = found(c.passdb(ADDR, "another-password-entirely"))["password"]
    assert first == again


def test_existing_password_in_other_scheme_is_returned_as_is(doveauth):
    udir = doveauth.mailboxes / ADDR
    udir.mkdir(parents=True)
    (udir / "password").write_text("{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuu")
    with DictClient(doveauth.socket) as c:
        assert (
            found(c.passdb(ADDR, PASSWORD))["password"]
            == "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuu"
        )


def test_refused_creations_answer_not_found_and_create_nothing(doveauth):
    cases = {
        "short@example.org": "username shorter than 9",
        "abcdefghij@example.org": "username longer than 9",
        "abcdefghi@other.org": "domain is not example.org",
    }
    with DictClient(doveauth.socket) as c:
        for addr, reason in cases.items():
            assert c.passdb(addr, PASSWORD) == b"N\n"
            assert reason in doveauth.log_text()
        assert c.passdb(ADDR, "short") == b"N\n"
        assert c.passdb(ADDR, "x" * 257) == b"N\n"
    assert not doveauth.mailboxes.exists() or not any(doveauth.mailboxes.iterdir())
    assert "password shorter than 9" in doveauth.log_text()


def test_hostile_addresses_are_refused_without_touching_disk(doveauth, tmp_path):
    hostile = [
        "../../etc@example.org",
        "a/b/c@example.org",
        "abc\0defgh@example.org",
        "..@example.org",
        "abcdefghi@../../x",
        "ABCDEFGHI@example.org",
        "x" * 5000,
    ]
    with DictClient(doveauth.socket) as c:
        for addr in hostile:
            assert c.passdb(addr, PASSWORD) == b"N\n"
            assert c.lookup(f"shared/userdb/{addr}", addr) == b"N\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chatmail.ini",
        "doveauth.log",
        "doveauth.socket",
    ]


def test_nocreate_file_stops_creation_but_not_existing_logins(doveauth):
    with DictClient(doveauth.socket) as c:
        found(c.passdb(ADDR, PASSWORD))
        doveauth.nocreate.touch()
        assert c.passdb("zzzzzzzzz@example.org", PASSWORD) == b"N\n"
        assert found(c.passdb(ADDR, PASSWORD))["password"]
    assert "nocreate exists" in doveauth.log_text()


def test_resource_limits_stop_creation(tmp_path):
    daemon = start_daemon("doveauth", tmp_path, "min_free_disk_space = 1000000T\n")
    try:
        with DictClient(daemon.socket) as c:
            assert c.passdb(ADDR, PASSWORD) == b"N\n"
        assert "below min_free_disk_space" in daemon.log_text()
    finally:
        daemon.stop()


def test_userdb_lookup_and_iteration(doveauth):
    with DictClient(doveauth.socket) as c:
        assert c.lookup(f"shared/userdb/{ADDR}", ADDR) == b"N\n"
        found(c.passdb(ADDR, PASSWORD))
        found(c.passdb("bcdefghij@example.org", PASSWORD))
        user = found(c.lookup(f"shared/userdb/{ADDR}", ADDR))
        assert user == {"home": str(doveauth.mailboxes / ADDR), "uid": "vmail", "gid": "vmail"}
        assert c.iterate("shared/userdb/") == [
            f"Oshared/userdb/{ADDR}\t\n".encode(),
            b"Oshared/userdb/bcdefghij@example.org\t\n",
        ]


def test_no_password_in_logs(doveauth):
    secret = "very-secret-pass-123"
    with DictClient(doveauth.socket) as c:
        found(c.passdb(ADDR, secret))
        c.passdb("short@example.org", secret)
        c.send(f"Lshared/passdb/{secret}\x01\tbroken\tline\tx\n".encode())
        assert c.readline() == b"F\n"
    assert secret not in doveauth.log_text()


def test_bad_lines_answer_failure_and_server_keeps_serving(doveauth):
    with DictClient(doveauth.socket) as c:
        for bad in (b"Zzz\n", b"\n", b"I\n", b"Lk\tu\textra\n", b"Cnotanumber\n"):
            c.send(bad)
            assert c.readline() == b"F\n", bad
        c.send(b"L" + b"x" * 70000 + b"\n")
        assert c.readline() == b"F\n"
        assert found(c.passdb(ADDR, PASSWORD))
    assert "bad request line" in doveauth.log_text()


def test_pipelined_requests_are_answered_in_order(doveauth):
    with DictClient(doveauth.socket) as c:
        found(c.passdb(ADDR, PASSWORD))
        new = [f"n{i:08d}@example.org" for i in range(5)]
        batch = b"".join(
            f'Lshared/passdb/{PASSWORD}"{addr}\t{addr}\nLshared/userdb/nosuchuse@example.org\t\n'.encode()
            for addr in [ADDR, *new]
        )
        c.send(batch)
        replies = [c.readline() for _ in range(12)]
    assert replies[1::2] == [b"N\n"] * 6
    assert all(r.startswith(b"O") for r in replies[0::2])


def test_thousands_of_connections_at_once(doveauth):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    with DictClient(doveauth.socket) as c:
        found(c.passdb(ADDR, PASSWORD))
    clients = [DictClient(doveauth.socket) for _ in range(2000)]
    try:
        for c in clients:
            c.send(f'Lshared/passdb/{PASSWORD}"{ADDR}\t{ADDR}\n'.encode())
        assert all(c.readline().startswith(b"O{") for c in clients)
    finally:
        for c in clients:
            c.close()


def _race(socket_path: str, addr: str, password: str, out) -> None:
    with DictClient(Path(socket_path)) as c:
        out.put(c.passdb(addr, password))


def test_concurrent_first_logins_create_one_account(doveauth, tmp_path):
    # a second doveauth on the same mailboxes: the race also spans server processes
    other = start_daemon("doveauth", tmp_path / "other", mailboxes=doveauth.mailboxes)
    try:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(str(sock), ADDR, f"password-{i:04d}", out))
            for i, sock in enumerate([doveauth.socket, other.socket] * 4)
        ]
        replies: list[bytes] = []
        lock = threading.Lock()

        def thread_login(i: int) -> None:
            sock = doveauth.socket if i % 2 else other.socket
            with DictClient(sock) as c:
                reply = c.passdb(ADDR, f"thread-pass-{i:04d}")
            with lock:
                replies.append(reply)

        threads = [threading.Thread(target=thread_login, args=(i,)) for i in range(40)]
        for p in procs:
            p.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        replies += [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
    finally:
        other.stop()
    on_disk = (doveauth.mailboxes / ADDR / "password").read_text()
    assert len(replies) == 48
    assert {found(r)["password"] for r in replies} == {on_disk}
    creations = doveauth.log_text().count("created account") + other.log_text().count(
        "created account"
    )
    assert creations == 1


def test_stale_socket_is_replaced_and_sigterm_removes_it(tmp_path):
    import socket as socketmod

    stale = tmp_path / "doveauth.socket"
    s = socketmod.socket(socketmod.AF_UNIX)
    s.bind(str(stale))
    s.close()  # the file stays, nobody listens
    daemon = start_daemon("doveauth", tmp_path, "", "--restart-grace", "0")
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
    with DictClient(daemon.socket) as c:
        found(c.passdb(ADDR, PASSWORD))
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    assert "removed stale socket" in daemon.log_text()


def test_help_and_bad_config_exit_cleanly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for module in ("doveauth", "doveauth.lastlogin"):
        ok = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env
        )
        assert ok.returncode == 0 and "SOCKET_PATH" in ok.stdout
    bad = tmp_path / "bad.ini"
    bad.write_text("[params]\nmail_domain = example.org\nusername_min_length = nine\n")
    res = subprocess.run(
        [sys.executable, "-m", "doveauth", str(tmp_path / "s"), str(bad)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 2
    assert str(bad) in res.stderr and "username_min_length" in res.stderr and "nine" in res.stderr


def test_doveauth_is_one_process_that_hashes_in_low_priority_threads(doveauth):
    import psutil

    proc = psutil.Process(doveauth.proc.pid)
    with DictClient(doveauth.socket) as c:
        for i in range(20):
            addr = f"abcdefg{i:02d}@example.org"
            assert found(c.passdb(addr, PASSWORD))["password"].startswith("{SHA512-CRYPT}$6$")
    assert proc.children(recursive=True) == []
    # the event loop's thread keeps the process's priority; only the hashing threads are nicer
    niceness = [os.getpriority(os.PRIO_PROCESS, t.id) for t in proc.threads()]
    assert min(niceness) == proc.nice() < max(niceness)
    assert doveauth.log_text().count("created account") == 20


def test_socket_mode_and_group_are_configurable(tmp_path):
    import grp

    from helpers_env import require

    require("vmail" in {g.gr_name for g in grp.getgrall()}, "needs the vmail group")
    daemon = start_daemon(
        "doveauth", tmp_path, "", "--socket-mode", "640", "--socket-group", "vmail"
    )
    try:
        st = daemon.socket.stat()
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_gid == grp.getgrnam("vmail").gr_gid
    finally:
        daemon.stop()
