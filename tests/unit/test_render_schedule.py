"""The daily expiry's schedule as the renderer writes it: a cron file, or systemd units."""

from __future__ import annotations

import configparser
import dataclasses
import re
import shlex
import stat
from pathlib import Path

import pytest
from crontab import cron_entries

from chatmaild import config
from relay.render import (
    Layout,
    RenderError,
    RenderParams,
    cron_escape,
    expire_time,
    render,
    systemd_escape,
)

PARAMS = RenderParams(vmail_uid=1234, bin_dir=Path("/x/bin"))


@pytest.fixture
def cfg(tmp_path) -> config.Config:
    return config.load(config.write_default("chat.example.org", tmp_path / "chatmail.ini"))


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(tmp_path / "state")


def cron_command(raw: str) -> str:
    """What cron hands to the shell: \\% becomes %, and an unescaped % would end the command."""
    assert not re.search(r"(?<!\\)%", raw), "an unescaped % would cut the command"
    return raw.replace("\\%", "%")


def systemd_command(exec_start: str) -> list[str]:
    """ExecStart's words as systemd passes them: %% is %, $$ is $."""
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(exec_start)]


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_cron_file_runs_expiry_daily_as_the_vmail_user_without_mail(cfg, layout):
    render(cfg, layout, PARAMS)
    path = layout.schedule_dir / "chatmail-expire"
    variables, jobs = cron_entries(path)
    assert variables == {"MAILTO": '""', "PATH": "/usr/bin:/bin"}
    ((minute, hour, day, month, weekday, user, command),) = jobs
    assert (int(hour), int(minute)) == expire_time("chat.example.org")
    assert (day, month, weekday) == ("*", "*", "*")
    assert user == "vmail"
    assert f"/x/bin/chatmail-expire {cfg.path} -v --remove;" in cron_command(command)


def test_cron_file_name_and_mode_are_ones_cron_reads(cfg, layout, tmp_path):
    cron_d = tmp_path / "cron.d"
    render(cfg, layout, dataclasses.replace(PARAMS, schedule_dir=cron_d))
    (path,) = cron_d.iterdir()
    assert path.name == "chatmail-expire"
    assert "." not in path.name  # cron ignores names with a dot
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # cron ignores group-writable files
    assert not layout.schedule_dir.exists()  # nothing in the state directory then


def test_the_run_appends_when_it_started_its_output_and_its_exit_status(cfg, layout):
    render(cfg, layout, PARAMS)
    _, ((*_, command),) = cron_entries(layout.schedule_dir / "chatmail-expire")
    log = layout.expire_log
    rotate, run = cron_command(command).split("; ", 1)
    assert rotate == f"savelog -q -n -c 7 {log}"  # the last 7 runs' logs
    assert run == (
        "{ echo chatmail-expire started $(date -Iseconds); "
        f"/x/bin/chatmail-expire {cfg.path} -v --remove; "
        f"echo chatmail-expire exit $?; }} >>{log} 2>&1"
    )
    assert log.parent == layout.log_dir / "expire"  # vmail's: savelog renames in it


def test_percent_and_dollar_are_escaped_for_cron_and_systemd():
    assert cron_escape("date +%F; echo $?") == "date +\\%F; echo $?"
    assert systemd_escape("date +%F; echo $?") == "date +%%F; echo $$?"


def test_a_different_vmail_user_runs_the_job(tmp_path, layout):
    ini = tmp_path / "chatmail.ini"
    ini.write_text("[params]\nmail_domain = chat.example.org\nvmail_user = mailer\n")
    render(config.load(ini), layout, PARAMS)
    _, ((*_, user, _command),) = cron_entries(layout.schedule_dir / "chatmail-expire")
    assert user == "mailer"


def test_the_expiry_minute_is_the_same_for_a_relay_and_differs_between_relays():
    assert expire_time("chat.example.org") == expire_time("chat.example.org")
    times = {expire_time(f"relay{i}.example.org") for i in range(20)}
    assert len(times) > 5
    assert {hour for hour, _ in times} == {3}
    assert all(0 <= minute < 60 for _, minute in times)


def test_systemd_units_run_the_same_command_daily_as_vmail(cfg, layout, tmp_path):
    units = tmp_path / "system"
    render(cfg, layout, PARAMS)
    render(cfg, layout, dataclasses.replace(PARAMS, scheduler="systemd", schedule_dir=units))
    assert sorted(p.name for p in units.iterdir()) == [
        "chatmail-expire.service",
        "chatmail-expire.timer",
    ]
    service = unit(units / "chatmail-expire.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] == "vmail"
    assert service["Environment"] == "PATH=/usr/bin:/bin"
    _, ((*_, cron_line),) = cron_entries(layout.schedule_dir / "chatmail-expire")
    assert systemd_command(service["ExecStart"]) == ["/bin/sh", "-c", cron_command(cron_line)]

    timer = unit(units / "chatmail-expire.timer")
    hour, minute = expire_time("chat.example.org")
    assert timer["Timer"]["OnCalendar"] == f"*-*-* {hour:02d}:{minute:02d}:00"
    assert timer["Timer"]["Persistent"] == "true"  # a run missed while off happens at boot
    assert timer["Timer"]["RandomizedDelaySec"] == "15min"
    assert timer["Install"]["WantedBy"] == "timers.target"
    for path in units.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_supervisord_runs_cron_only_when_asked(cfg, layout):
    render(cfg, layout, PARAMS)
    assert "program:cron" not in supervisord_sections(layout)
    render(cfg, layout, dataclasses.replace(PARAMS, run_cron=True))
    cron = supervisord_sections(layout)["program:cron"]
    assert shlex.split(cron["command"]) == ["/usr/sbin/cron", "-f"]  # in the foreground
    assert "user" not in cron  # cron runs as root and switches to each job's user
    assert cron["umask"] == "022"  # not supervisord's 027: jobs get what a boot-time cron gives


def test_cron_under_supervisord_with_a_systemd_timer_is_refused(cfg, layout):
    params = dataclasses.replace(PARAMS, scheduler="systemd", run_cron=True)
    with pytest.raises(RenderError, match="cron"):
        render(cfg, layout, params)


def test_an_unknown_scheduler_is_refused(cfg, layout):
    with pytest.raises(RenderError, match="scheduler"):
        render(cfg, layout, dataclasses.replace(PARAMS, scheduler="at"))
    assert not layout.supervisord_conf.exists()


def supervisord_sections(layout: Layout) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(layout.supervisord_conf.read_text())
    return parser
