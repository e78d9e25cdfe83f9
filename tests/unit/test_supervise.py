"""supervise's view of a running relay: finding its supervisord changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay import supervise
from relay.render import Layout


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "state")
    layout.state_dir.mkdir()
    return layout


def test_no_pidfile_means_not_running(layout):
    assert supervise.supervisord_pid(layout) is None


def test_a_pidfile_naming_another_process_is_not_ours_and_is_left_alone(layout):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        layout.supervisord_pid.write_text(f"{other.pid}\n")
        assert supervise.supervisord_pid(layout) is None
        assert supervise.status(layout).startswith("not running")
        assert layout.supervisord_pid.read_text() == f"{other.pid}\n"  # status changed nothing
    finally:
        other.kill()
        other.wait()


def test_a_pidfile_of_a_dead_process_is_left_alone(layout):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    layout.supervisord_pid.write_text(str(dead.pid))
    assert supervise.supervisord_pid(layout) is None
    assert layout.supervisord_pid.exists()


def test_garbage_pidfile_means_not_running(layout):
    layout.supervisord_pid.write_text("not a pid")
    assert supervise.supervisord_pid(layout) is None
    assert layout.supervisord_pid.exists()


def test_unreadable_proc_entry_is_a_clear_error(layout, monkeypatch):
    """With /proc mounted hidepid=1, another user's /proc/PID/cmdline is not readable."""
    layout.supervisord_pid.write_text(str(os.getpid()))
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if str(path) == f"/proc/{os.getpid()}/cmdline":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(supervise.RelayError, match="run as root"):
        supervise.supervisord_pid(layout)


def fake_supervisord(directory: Path, first_line: str) -> None:
    script = directory / "supervisord"
    script.write_text(f"{first_line}\nprint('started')\n")
    script.chmod(0o755)


def test_supervisord_runs_through_the_lean_launcher_with_its_own_python(
    layout, tmp_path, monkeypatch
):
    fake_supervisord(tmp_path, "#!/usr/bin/python3")
    monkeypatch.setenv("PATH", str(tmp_path))
    lean = str(Path(supervise.__file__).with_name("lean_supervisord.py"))
    conf = str(layout.supervisord_conf)
    assert supervise.supervisord_command(layout) == ["/usr/bin/python3", "-I", lean, "-c", conf]


def test_a_supervisord_that_is_no_python_script_runs_as_it_is(layout, tmp_path, monkeypatch):
    fake_supervisord(tmp_path, "#!/bin/sh")
    monkeypatch.setenv("PATH", str(tmp_path))
    script = str(tmp_path / "supervisord")
    command = supervise.supervisord_command(layout)
    assert command == [script, "-c", str(layout.supervisord_conf)]


def test_without_supervisord_up_says_what_to_install(layout, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(supervise.RelayError, match="install Debian's supervisor package"):
        supervise.supervisord_command(layout)


def test_the_lean_launcher_runs_debians_supervisord_without_pkg_resources_or_openssl(
    layout, tmp_path
):
    """A supervisord started as up starts it serves its socket, has no OpenSSL library mapped,
    and never imported setuptools' pkg_resources (the launcher's whole point)."""
    command = supervise.supervisord_command(layout)
    if "-I" not in command:
        pytest.fail(f"supervisord is not Debian's Python script: {command}")
    sock = tmp_path / "supervisor.sock"
    layout.supervisord_conf.write_text(
        f"[supervisord]\nnodaemon = true\nlogfile = {tmp_path / 'log'}\n"
        f"pidfile = {tmp_path / 'pid'}\n[unix_http_server]\nfile = {sock}\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
    )
    python, lean, rest = command[0], command[2], command[3:]
    proc = subprocess.Popen(
        [python, "-I", "-X", "importtime", lean, *rest],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "supervisord did not start"
            time.sleep(0.05)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/libpython" in maps or "python3" in maps
        assert "libssl" not in maps and "libcrypto" not in maps
        state = subprocess.run(
            ["supervisorctl", "-s", f"unix://{sock}", "pid"], capture_output=True, text=True
        )
        assert state.stdout.strip() == str(proc.pid)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    imported = {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if "|" in line}
    assert "supervisor.supervisord" in imported and "supervisor.options" in imported
    assert not imported & {"pkg_resources", "setuptools", "_ssl"}
    assert not {name for name in imported if name.split(".")[0] in ("relay", "chatmaild")}


def test_the_lean_launchers_entry_points_resolve_module_attribute_specs():
    """supervisor's import_spec: pkg_resources.EntryPoint.parse("x=" + spec).resolve()."""
    from relay.lean_supervisord import _EntryPoint

    resolved = _EntryPoint.parse("x=os.path:join").resolve()
    assert resolved is os.path.join
    with pytest.raises(AttributeError):
        _EntryPoint.parse("x=os.path:no_such_name").resolve()
