"""IMAP sessions on loopback, from client processes: LOGIN+LOGOUT over a window or each once,
and METADATA commands in logged-in sessions.

One session connects, reads the greeting, logs in with LOGIN and logs out, then starts over
with the next account; several sessions run concurrently in each client process (asyncio).
A metadata session logs in once, before the window, and then sets and reads a push device
token (SETMETADATA, GETMETADATA on INBOX) as a chat app does, over and over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .clients import LoadResult, Window, WorkerResult, finished, run_in_client, sleep_until

TIMEOUT = 30  # seconds one session may take before it counts as failed


@dataclass(frozen=True)
class ImapJob:
    port: int
    accounts: tuple[tuple[str, str], ...]  # (address, password), logged in to in turn
    sessions: int  # concurrent sessions in this client process
    offset: int  # where in ``accounts`` this job starts


def imap_jobs(
    port: int, credentials: tuple[tuple[str, str], ...], procs: int, sessions: int
) -> list[ImapJob]:
    """``procs`` client processes with ``sessions`` each, every session starting elsewhere."""
    return [ImapJob(port, credentials, sessions, i * sessions) for i in range(procs)]


def prepare_imap_job(job: ImapJob) -> Callable[[Window], WorkerResult]:
    """For ``clients.run_clients``: sessions over the window, each login recorded."""
    return lambda window: asyncio.run(_imap_sessions(job, window))


async def _imap_sessions(job: ImapJob, window: Window) -> WorkerResult:
    result = WorkerResult()
    sleep_until(window.start)

    async def session(first: int) -> None:
        n = first
        while time.monotonic() < window.end:
            addr, password = job.accounts[n % len(job.accounts)]
            n += job.sessions
            began = time.monotonic()
            problem = await _timed_login(job.port, addr, password)
            done = time.monotonic()
            result.record(done, window, not problem, done - began, problem)

    await asyncio.gather(*(session(job.offset + i) for i in range(job.sessions)))
    return result


@dataclass(frozen=True)
class LoginEach:
    port: int
    credentials: tuple[tuple[str, str], ...]
    concurrency: int


def login_each(
    port: int, credentials: Sequence[tuple[str, str]], concurrency: int, timeout: float = 600
) -> LoadResult:
    """LOGIN+LOGOUT once with each (address, password), ``concurrency`` at a time.

    From a client process, which ``timeout`` seconds bound (the results count from its start).
    """
    job = LoginEach(port, tuple(credentials), concurrency)
    return run_in_client(_run_login_each, job, timeout)


def _run_login_each(job: LoginEach) -> LoadResult:
    return asyncio.run(_login_each(job))


async def _login_each(job: LoginEach) -> LoadResult:
    todo = iter(job.credentials)
    result = WorkerResult()
    start = time.monotonic()
    cpu0 = time.process_time()
    window = Window(start, start, float("inf"))

    async def session() -> None:
        for addr, password in todo:
            began = time.monotonic()
            problem = await _timed_login(job.port, addr, password)
            done = time.monotonic()
            result.record(done, window, not problem, done - began, problem)

    await asyncio.gather(*(session() for _ in range(job.concurrency)))
    return finished(result, start, cpu0)


async def _timed_login(port: int, addr: str, password: str) -> str:
    try:
        async with asyncio.timeout(TIMEOUT):
            return await imap_login_logout(port, addr, password)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def imap_login_logout(port: int, addr: str, password: str) -> str:
    """Connect, LOGIN, LOGOUT; "" if all went well, else the unexpected line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            return greeting.decode(errors="replace").strip()
        writer.write(f'a LOGIN "{addr}" "{password}"\r\n'.encode())
        login = await _tagged_reply(reader, b"a ")
        if not login.startswith(b"a OK"):
            return login.decode(errors="replace").strip()
        writer.write(b"b LOGOUT\r\n")
        logout = await _tagged_reply(reader, b"b ")
        return "" if logout.startswith(b"b OK") else logout.decode(errors="replace").strip()
    finally:
        writer.close()


async def _tagged_reply(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line.startswith(tag):
            return line


# -- METADATA in logged-in sessions --------------------------------------------------------------

SET_TOKEN = b'a SETMETADATA INBOX (/private/devicetoken "tok")\r\n'
GET_TOKEN = b"b GETMETADATA INBOX /private/devicetoken\r\n"
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class MetadataJob:
    port: int
    accounts: tuple[tuple[str, str], ...]  # (address, password): one session each


def prepare_metadata_job(job: MetadataJob) -> Callable[[Window], WorkerResult]:
    """For ``clients.run_clients``: log every session in now; over the window each session
    repeats one op, SETMETADATA then GETMETADATA of /private/devicetoken, recorded as one."""
    loop = asyncio.new_event_loop()
    sessions = loop.run_until_complete(_log_in_all(job))

    def run(window: Window) -> WorkerResult:
        try:
            return loop.run_until_complete(_metadata_sessions(sessions, window))
        finally:
            loop.close()

    return run


async def _log_in_all(job: MetadataJob) -> list[Streams]:
    return list(await asyncio.gather(*(_logged_in(job.port, *a) for a in job.accounts)))


async def _logged_in(port: int, addr: str, password: str) -> Streams:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    greeting = await reader.readline()
    writer.write(f'a LOGIN "{addr}" "{password}"\r\n'.encode())
    login = await _tagged_reply(reader, b"a ")
    if not greeting.startswith(b"* OK") or not login.startswith(b"a OK"):
        raise RuntimeError(f"IMAP login of {addr} failed: {login.decode(errors='replace')}")
    return reader, writer


async def _metadata_sessions(sessions: list[Streams], window: Window) -> WorkerResult:
    result = WorkerResult()
    sleep_until(window.start)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while time.monotonic() < window.end:
            began = time.monotonic()
            try:
                async with asyncio.timeout(TIMEOUT):
                    problem = await metadata_op(reader, writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            done = time.monotonic()
            result.record(done, window, not problem, done - began, problem)
            if problem:
                break  # the session's state is unknown: it ends
        writer.close()

    await asyncio.gather(*(session(*s) for s in sessions))
    return result


async def metadata_op(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """Set the token, read it back; "" if both went well, else the unexpected line."""
    writer.write(SET_TOKEN)
    reply = await _tagged_reply(reader, b"a ")
    if not reply.startswith(b"a OK"):
        return reply.decode(errors="replace").strip()
    writer.write(GET_TOKEN)
    untagged = b""
    while not (line := await reader.readline()).startswith(b"b "):
        if not line:
            raise asyncio.IncompleteReadError(untagged, None)
        untagged += line
    if not line.startswith(b"b OK") or b"tok" not in untagged:
        return (line + untagged[:80]).decode(errors="replace").strip()
    return ""
