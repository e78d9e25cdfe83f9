"""filtermail's process: one direction's SMTP filter on a loopback port, until SIGTERM.

Postfix's smtpd (submission for ``outgoing``, port 25 for ``incoming``) connects to
``127.0.0.1:filtermail_smtp_port[_incoming]`` as its before-queue filter
(``smtpd_proxy_filter``) and relays filtermail's replies to its client; accepted mail goes back
to Postfix on ``127.0.0.1:postfix_reinject_port[_incoming]``. Runs as the vmail user; reads
chatmail.ini and the mailboxes directory (account files), writes only unlinked spool files in a
private temporary directory that is removed at exit.

``serve`` is the whole daemon, for tests and ``python -m filtermail`` alike.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chatmaild import config

from .handler import HEAVY_AT_ONCE, Filter, Signer, Verifier
from .memory import Malloc
from .policy import OUTGOING
from .reinject import Reinjector
from .smtpserver import FilterSMTP, ServerConfig
from .spool import private_directory

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
BACKLOG = 1024  # Postfix's proxies may connect all at once (smtpd processes, default 100)
STOP_GRACE = 30.0  # seconds a stop waits for messages being handed on
IDLE_TIMEOUT = 300.0  # as aiosmtpd's inactivity timeout; Postfix's proxy gives up after 100 s
# Checking threads hold the GIL in slices; the event loop must get it back soon (doveauth
# measured 0.5 ms for its hashing threads; 1 ms here).
SWITCH_INTERVAL = 0.001


@dataclass(frozen=True)
class Settings:
    """What filtermail needs from chatmail.ini, for one direction."""

    direction: str
    mail_domain: str
    addr_domain: str
    mailboxes_dir: Path
    max_message_size: int
    max_user_send_per_minute: int
    max_user_send_burst_size: int

    @classmethod
    def from_config(cls, cfg: config.Config, direction: str) -> Settings:
        return cls(
            direction=direction,
            mail_domain=cfg.mail_domain,
            addr_domain=cfg.addr_domain,
            mailboxes_dir=cfg.mailboxes_dir,
            max_message_size=cfg.max_message_size,
            max_user_send_per_minute=cfg.max_user_send_per_minute,
            max_user_send_burst_size=cfg.max_user_send_burst_size,
        )


@dataclass(frozen=True)
class Ports:
    listen: str
    port: int
    reinject_port: int

    @classmethod
    def from_config(cls, cfg: config.Config, direction: str) -> Ports:
        if direction == OUTGOING:
            return cls(LOOPBACK, cfg.filtermail_smtp_port, cfg.postfix_reinject_port)
        return cls(LOOPBACK, cfg.filtermail_smtp_port_incoming, cfg.postfix_reinject_port_incoming)


def dkim_parts(cfg: config.Config, direction: str) -> tuple[Signer | None, Verifier | None]:
    """(signer, verifier) for this direction, as chatmail.ini asks; None where off.

    ``filtermail.dkim`` (and dkimpy, dnspython) is imported only when one is on.
    """
    sign = direction == OUTGOING and cfg.signs_dkim
    verify = direction != OUTGOING and cfg.verifies_dkim
    if not (sign or verify):
        return None, None
    from . import dkim  # lazy: dkimpy and dnspython cost idle memory

    signer = dkim.Signer(cfg.mail_domain, cfg.dkim_selector, cfg.dkim_key_path) if sign else None
    verifier = dkim.Verifier(cfg.dkim_dns_resolver, cfg.dkim_dns_timeout) if verify else None
    return signer, verifier


async def serve(
    settings: Settings,
    ports: Ports,
    signer: Signer | None = None,
    verifier: Verifier | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT arrives); the exit status."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    sys.setswitchinterval(SWITCH_INTERVAL)
    malloc = Malloc()
    malloc.configure()
    spool_dir = private_directory()
    executor = ThreadPoolExecutor(HEAVY_AT_ONCE, thread_name_prefix="filtermail-check")
    reinjector = Reinjector(LOOPBACK, ports.reinject_port, helo=settings.mail_domain)
    handler = Filter(settings, reinjector, executor, signer, verifier)
    if malloc.tunable:
        handler.release_memory = malloc.release

    smtp = ServerConfig(
        handler,
        spool_dir=spool_dir,
        max_size=settings.max_message_size,
        hostname=settings.mail_domain,
        timeout=IDLE_TIMEOUT,
    )
    try:
        server = await loop.create_server(
            lambda: FilterSMTP(smtp), ports.listen, ports.port, reuse_address=True, backlog=BACKLOG
        )
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", ports.listen, ports.port, exc.strerror)
        shutil.rmtree(spool_dir, ignore_errors=True)
        executor.shutdown()
        return 1
    log.info(
        "%s filter on %s port %d, reinjecting to port %d",
        settings.direction,
        ports.listen,
        ports.port,
        ports.reinject_port,
    )
    try:
        await stop.wait()
        log.info("stopping: finishing messages being handed on")
        server.close()
        await _drain(handler)
    finally:
        await reinjector.close()
        executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(spool_dir, ignore_errors=True)
    log.info("stopped")
    return 0


async def _drain(handler: Filter) -> None:
    deadline = asyncio.get_running_loop().time() + STOP_GRACE
    while handler.in_flight and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
