"""A real filtermail process from this tree, and an aiosmtpd sink playing Postfix's reinjection
listener (it records what arrives, and can be told to refuse)."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from daemons import REPO, write_ini
from helpers_env import free_port

IP_DOMAIN = "[127.0.0.1]"


@dataclass
class Arrived:
    mail_from: str
    rcpts: list[str]
    options: list[str]
    content: bytes


@dataclass
class SinkHandler:
    arrived: list[Arrived] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # "MAIL"/"RCPT"/"DATA" -> reply
    pipelining: bool = False  # offer PIPELINING (RFC 2920), as Postfix does

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):
        if "MAIL" in self.refuse:
            return self.refuse["MAIL"]
        envelope.mail_from = address  # "<>" for the null path: aiosmtpd's RCPT needs a value
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        if "RCPT" in self.refuse:
            return self.refuse["RCPT"]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if "DATA" in self.refuse:
            return self.refuse["DATA"]
        self.arrived.append(
            Arrived(
                "" if envelope.mail_from == "<>" else envelope.mail_from,
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                envelope.original_content,
            )
        )
        return "250 2.0.0 Ok: queued as SINK1"


class Sink:
    """aiosmtpd on a loopback port, in a thread; ``stop()`` makes the port refuse connections."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True
        )
        self.controller.start()
        self.running = True

    @property
    def arrived(self) -> list[Arrived]:
        return self.handler.arrived

    def stop(self) -> None:
        if self.running:  # stopping twice is harmless
            self.controller.stop()
            self.running = False


@dataclass
class Filtermail:
    proc: subprocess.Popen
    port: int
    log: Path
    mailboxes: Path

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="postfix", timeout=30)

    def log_text(self) -> str:
        return self.log.read_text()

    def add_account(self, addr: str, enforce: bool = True) -> None:
        udir = self.mailboxes / addr
        udir.mkdir(parents=True)
        (udir / "password").write_text("{PLAIN}secret")
        if enforce:
            (udir / "enforceE2EEincoming").write_text("")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_filtermail(
    tmp: Path, direction: str, reinject_port: int, extra_ini: str = ""
) -> Filtermail:
    """``python -m filtermail INI DIRECTION`` for the IP relay 127.0.0.1, on a free port."""
    tmp.mkdir(exist_ok=True)
    mailboxes = tmp / "mail"
    mailboxes.mkdir(exist_ok=True)
    ini = write_ini(tmp, "mail_domain = 127.0.0.1\n" + extra_ini, mailboxes)
    port = free_port()
    log = tmp / f"filtermail-{direction}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    args = ["--port", str(port), "--reinject-port", str(reinject_port)]
    with open(log, "wb") as logfp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "filtermail", str(ini), direction, *args],
            stdout=logfp,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    deadline = time.monotonic() + 20
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"filtermail did not start: {log.read_text()}")
        time.sleep(0.02)
    return Filtermail(proc, port, log, mailboxes)
