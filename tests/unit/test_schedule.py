"""How up sets up the daily expiry: cron or a systemd timer, and never a second cron."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatmaild import config
from relay import schedule
from relay.render import Layout, RenderParams


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "state")
    layout.state_dir.mkdir()
    return layout


@pytest.mark.parametrize(
    ("comm", "expected"), [("systemd\n", "systemd"), ("process_api\n", "cron"), ("init\n", "cron")]
)
def test_systemd_as_pid_1_gets_a_timer_anything_else_cron(tmp_path, comm, expected):
    path = tmp_path / "comm"
    path.write_text(comm)
    assert schedule.pid1_scheduler(path) == expected
    assert schedule.pid1_scheduler(tmp_path / "unreadable") == "cron"


SUPERVISORD = 500


@pytest.mark.parametrize(
    ("procs", "found"),
    [
        ([(1, 0, "init"), (80, 1, "sshd")], None),
        ([(1, 0, "init"), (90, 1, "cron")], 90),
        ([(1, 0, "init"), (91, 1, "crond")], 91),  # cronie, busybox
        ([(SUPERVISORD, 1, "python3"), (92, SUPERVISORD, "cron")], None),  # the relay's own
        ([(SUPERVISORD, 1, "python3"), (92, SUPERVISORD, "cron"), (93, 92, "cron")], None),
        ([(90, 1, "cron"), (95, 90, "cron"), (96, 95, "sh")], 90),  # a job is not a daemon
        ([(7, 1, "supervisord"), (92, 7, "cron")], 92),  # another supervisord's
    ],
)
def test_a_cron_daemon_is_one_the_relay_did_not_start(procs, found):
    assert schedule.cron_daemon(SUPERVISORD, procs) == found


def test_a_cron_is_never_anyones_when_the_relay_does_not_run():
    assert schedule.cron_daemon(None, [(92, SUPERVISORD, "cron")]) == 92


def test_without_a_cron_daemon_supervisord_runs_cron(layout, monkeypatch, tmp_path):
    monkeypatch.setattr(schedule, "processes", lambda: [(1, 0, "process_api")])
    cron = tmp_path / "cron"
    cron.touch()
    params, runner = schedule.for_install(RenderParams(cron_bin=str(cron)), layout)
    assert params.schedule_dir == Path("/etc/cron.d")
    assert params.run_cron
    assert "the relay's supervisord" in runner


def test_without_cron_installed_up_says_so(layout, monkeypatch, tmp_path):
    monkeypatch.setattr(schedule, "processes", lambda: [(1, 0, "process_api")])
    params = RenderParams(cron_bin=str(tmp_path / "no-cron"))
    with pytest.raises(schedule.RelayError, match="install cron"):
        schedule.for_install(params, layout)


def test_with_a_cron_daemon_running_none_is_started(layout, monkeypatch):
    monkeypatch.setattr(schedule, "processes", lambda: [(1, 0, "init"), (321, 1, "cron")])
    params, runner = schedule.for_install(RenderParams(scheduler="cron"), layout)
    assert params.schedule_dir == Path("/etc/cron.d")
    assert not params.run_cron
    assert runner == "the cron daemon that runs here (pid 321)"


def test_with_systemd_the_units_go_to_systemds_directory(layout, monkeypatch):
    monkeypatch.setattr(schedule, "processes", lambda: pytest.fail("no cron needed"))
    params, runner = schedule.for_install(RenderParams(scheduler="systemd"), layout)
    assert params.schedule_dir == Path("/etc/systemd/system")
    assert not params.run_cron
    assert runner == "systemd (chatmail-expire.timer)"


@pytest.fixture
def systemctl(tmp_path, monkeypatch) -> Path:
    """A stand-in systemctl on PATH that records its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "systemctl-calls"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return calls


def installed(params: RenderParams, layout: Layout) -> tuple[Path, ...]:
    files = params.schedule_files(layout)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("rendered\n")
    return files


def test_down_removes_a_recorded_file_that_was_never_written(tmp_path, layout):
    params = RenderParams(scheduler="cron", schedule_dir=tmp_path / "cron.d")
    schedule.record(params, layout)  # up failed before rendering
    assert schedule.deactivate(layout) == []
    assert not layout.schedule_installed.exists()


def test_a_timer_is_enabled_and_down_removes_it(tmp_path, layout, systemctl):
    params = RenderParams(scheduler="systemd", schedule_dir=tmp_path / "system")
    schedule.record(params, layout)
    files = installed(params, layout)
    schedule.enable(params)
    assert systemctl.read_text().splitlines() == [
        "daemon-reload",
        "enable --now chatmail-expire.timer",
    ]
    assert schedule.deactivate(layout) == list(files)
    assert not any(path.exists() for path in files)
    assert systemctl.read_text().splitlines()[2:] == [
        "disable --now chatmail-expire.timer",
        "daemon-reload",
    ]
    assert schedule.deactivate(layout) == []  # nothing recorded any more


def test_down_removes_the_cron_file_up_installed_without_systemctl(tmp_path, layout, systemctl):
    params = RenderParams(scheduler="cron", schedule_dir=tmp_path / "cron.d")
    schedule.record(params, layout)
    (cron_file,) = installed(params, layout)
    schedule.enable(params)
    assert schedule.deactivate(layout) == [cron_file]
    assert not cron_file.exists()
    assert not systemctl.exists()


def test_down_removes_only_schedule_files_whatever_the_record_says(tmp_path, layout):
    other = tmp_path / "precious"
    other.write_text("keep\n")
    layout.schedule_installed.write_text(f"{other}\n")
    assert schedule.deactivate(layout) == []
    assert other.exists()


def test_a_failing_systemctl_is_reported(tmp_path, layout, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text("#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    params = RenderParams(scheduler="systemd", schedule_dir=tmp_path / "system")
    with pytest.raises(schedule.RelayError, match="daemon-reload failed: Failed to connect"):
        schedule.enable(params)


def test_ups_summary_says_when_and_what_runs_it(tmp_path, layout):
    cfg = config.load(config.write_default("chat.example.org", tmp_path / "chatmail.ini"))
    hour, minute = schedule.expire_time("chat.example.org")
    cron = RenderParams(scheduler="cron", schedule_dir=Path("/etc/cron.d"), run_cron=True)
    text = schedule.summary(cfg, cron, layout, "the cron daemon that runs here (pid 7)")
    assert text == (
        f"daily at {hour:02d}:{minute:02d} by the cron daemon that runs here (pid 7): "
        f"/etc/cron.d/chatmail-expire; log {layout.expire_log}"
    )
    timer = RenderParams(scheduler="systemd", schedule_dir=Path("/etc/systemd/system"))
    text = schedule.summary(cfg, timer, layout, "systemd (chatmail-expire.timer)")
    assert text.startswith(f"daily at {hour:02d}:{minute:02d} (up to 15 min later) by systemd")
    only = RenderParams(schedule_dir=tmp_path / "cron.d")
    text = schedule.summary(cfg, only, layout, None)
    assert text.endswith(f"rendered into {tmp_path}/cron.d/chatmail-expire only: nothing runs it")
