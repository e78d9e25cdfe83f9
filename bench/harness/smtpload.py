"""SMTP clients for client processes: chat clients on submission, or Postfix's filter proxy.

Several sessions run concurrently in each client process (asyncio), each sending one message
after the other, one command at a time (no pipelining), as ``smtplib`` does:

* ``reuse=True``: a chat client. It connects (implicit TLS, SMTP AUTH PLAIN) before the window
  and sends many messages over that connection; latency runs from MAIL FROM to the reply
  after the data.
* ``reuse=False``: what Postfix's before-queue proxy does to its filter (SMTPD_PROXY_README):
  one message per connection: connect, EHLO, MAIL, RCPT, DATA, QUIT; latency runs from the
  connect to the reply after the data.

A message counts as sent only on a 250 after its data; any other reply, or a connection that
fails, counts as an error (the session then reconnects).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from .clients import (
    LoadResult,
    Window,
    WorkerResult,
    finished,
    run_in_client,
    sleep_until,
    split_evenly,
)
from .mail import head

TIMEOUT = 120.0  # seconds one message may take before it counts as failed
HELO = "bench-client"


class SmtpError(Exception):
    """The server said something other than what the session expected."""


@dataclass(frozen=True)
class SmtpJob:
    """One client process's sessions; session ``i`` sends as ``senders[offset + i]``.

    Each message goes to the next of ``rcpts`` in turn, with ``body`` (dot-stuffed, from
    ``mail.encrypted_body``) under a fresh header. A sender with a password logs in (AUTH).
    """

    port: int
    sessions: int
    senders: tuple[tuple[str, str], ...]  # (address, password or "")
    rcpts: tuple[str, ...]
    body: bytes
    tls: bool = False  # implicit TLS (submissions, port 465)
    reuse: bool = True  # many messages per connection; False: one per connection
    offset: int = 0


def smtp_jobs(conns: int, procs: int, **fields) -> list[SmtpJob]:
    """``conns`` sessions spread over at most ``procs`` jobs, each session its own sender."""
    jobs, offset = [], 0
    for sessions in split_evenly(conns, procs):
        jobs.append(SmtpJob(sessions=sessions, offset=offset, **fields))
        offset += sessions
    return jobs


class Client:
    """One SMTP client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, tls: bool) -> Client:
        context = None
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the relay's self-signed certificate
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        client = cls(reader, writer)
        try:
            await client.expect(None, 220)
            await client.expect(f"EHLO {HELO}", 250)
        except BaseException:
            client.close()
            raise
        return client

    async def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line.endswith(b"\n"):
                raise SmtpError("connection closed")
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), b"".join(lines).decode(errors="replace").strip()

    async def expect(self, command: str | None, code: int) -> None:
        if command is not None:
            self.writer.write(command.encode() + b"\r\n")
        got, text = await self.reply()
        if got != code:
            raise SmtpError(text[:120])

    async def login(self, addr: str, password: str) -> None:
        token = base64.b64encode(f"\0{addr}\0{password}".encode()).decode()
        await self.expect(f"AUTH PLAIN {token}", 235)

    async def send(self, sender: str, rcpt: str, body: bytes) -> str:
        """One transaction; "" if the data got 250, else the reply that refused it."""
        for command, code in ((f"MAIL FROM:<{sender}>", 250), (f"RCPT TO:<{rcpt}>", 250)):
            self.writer.write(command.encode() + b"\r\n")
            got, text = await self.reply()
            if got != code:
                await self.expect("RSET", 250)
                return text
        self.writer.write(b"DATA\r\n")
        got, text = await self.reply()
        if got != 354:
            await self.expect("RSET", 250)
            return text
        self.writer.writelines((head(sender, rcpt), body, b".\r\n"))
        await self.writer.drain()
        got, text = await self.reply()
        return "" if got == 250 else text

    async def quit(self) -> None:
        self.writer.write(b"QUIT\r\n")
        await self.reply()

    def close(self) -> None:
        self.writer.close()


async def connect(job: SmtpJob, sender: tuple[str, str]) -> Client:
    client = await Client.open(job.port, job.tls)
    if sender[1]:
        try:
            await client.login(*sender)
        except BaseException:
            client.close()
            raise
    return client


FAILURES = (OSError, SmtpError, TimeoutError, asyncio.IncompleteReadError, ValueError)


def prepare_smtp_job(job: SmtpJob) -> Callable[[Window], WorkerResult]:
    """For ``clients.run_clients``: connect now (``reuse``), send over the window."""
    loop = asyncio.new_event_loop()
    senders = _senders(job)
    clients: list[Client | None] = [None] * job.sessions

    async def connect_all() -> list[Client | None]:
        return list(await asyncio.gather(*(connect(job, sender) for sender in senders)))

    if job.reuse:
        clients = loop.run_until_complete(connect_all())

    def run(window: Window) -> WorkerResult:
        try:
            return loop.run_until_complete(_drive(job, senders, clients, window))
        finally:
            loop.close()

    return run


@dataclass(frozen=True)
class SendCount:
    job: SmtpJob
    count: int


def send_count(job: SmtpJob, count: int, timeout: float = 300) -> LoadResult:
    """``count`` messages over ``job``'s sessions, from a client process; their results."""
    return run_in_client(_send_count, SendCount(job, count), timeout)


def _send_count(task: SendCount) -> LoadResult:
    start = time.monotonic()
    cpu = time.process_time()
    window = Window(start, start, math.inf)
    clients: list[Client | None] = [None] * task.job.sessions
    senders = _senders(task.job)
    result = asyncio.run(_drive(task.job, senders, clients, window, task.count))
    return finished(result, start, cpu)


def _senders(job: SmtpJob) -> list[tuple[str, str]]:
    return [job.senders[(job.offset + i) % len(job.senders)] for i in range(job.sessions)]


async def _drive(
    job: SmtpJob,
    senders: list[tuple[str, str]],
    clients: list[Client | None],
    window: Window,
    count: float = math.inf,
) -> WorkerResult:
    """Each session sends until the window ends, or until ``count`` messages have started."""
    result = WorkerResult()
    sleep_until(window.start)
    started = itertools.count()

    async def session(i: int) -> None:
        sender, client = senders[i], clients[i]
        n = job.offset + i
        while time.monotonic() < window.end and next(started) < count:
            rcpt = job.rcpts[n % len(job.rcpts)]
            n += job.sessions
            began = time.monotonic()
            try:
                async with asyncio.timeout(TIMEOUT):
                    if client is None:
                        client = await connect(job, sender)
                    if job.reuse:
                        began = time.monotonic()
                    problem = await client.send(sender[0], rcpt, job.body)
                    done = time.monotonic()
            except FAILURES as exc:
                done = time.monotonic()
                problem = f"{type(exc).__name__}: {exc}"
                if client is not None:
                    client.close()
                    client = None
                await asyncio.sleep(0.05)  # a refusing server is not hammered
            result.record(done, window, not problem, done - began, problem)
            if client is not None and not job.reuse:
                await _quit(client)
                client = None
        if client is not None:
            await _quit(client)

    await asyncio.gather(*(session(i) for i in range(job.sessions)))
    return result


async def _quit(client: Client) -> None:
    with contextlib.suppress(*FAILURES):
        async with asyncio.timeout(10):
            await client.quit()
    client.close()
