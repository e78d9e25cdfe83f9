"""Start a real daemon process (from this source tree) on a temporary socket and mailboxes dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Daemon:
    proc: subprocess.Popen
    socket: Path
    mailboxes: Path
    nocreate: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def write_ini(tmp: Path, extra: str = "", mailboxes: Path | None = None) -> Path:
    """A chatmail.ini for example.org in ``tmp``; ``extra`` lines ("key = value") override."""
    params = {
        "mail_domain": "example.org",
        "mailboxes_dir": str(mailboxes or tmp / "mail"),
        "nocreate_file": str(tmp / "nocreate"),
        "max_load_1m": "1000",
        "min_available_memory": "1M",
        "min_free_disk_space": "1M",
    }
    for line in extra.splitlines():
        name, _, value = line.partition("=")
        params[name.strip()] = value.strip()
    ini = tmp / "chatmail.ini"
    ini.write_text("[params]\n" + "".join(f"{k} = {v}\n" for k, v in params.items()))
    return ini


def start_daemon(
    module: str, tmp: Path, extra_ini: str = "", *args: str, mailboxes: Path | None = None
) -> Daemon:
    tmp.mkdir(exist_ok=True)
    ini = write_ini(tmp, extra_ini, mailboxes)
    sock = tmp / f"{module}.socket"
    log = tmp / f"{module}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as logfp:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(sock), str(ini), *args],
            stdout=logfp,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    deadline = time.monotonic() + 20
    while not _accepts(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{module} did not start: {log.read_text()}")
        time.sleep(0.02)
    return Daemon(proc, sock, mailboxes or tmp / "mail", tmp / "nocreate", log)
