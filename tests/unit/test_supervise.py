"""supervise's view of a running relay: finding its supervisord changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
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
