"""The command line every dict daemon shares: ``NAME SOCKET_PATH CONFIG_PATH [options]``.

The argument order is that of existing chatmail relays' unit files, so they keep working.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from . import config
from .dictconn import DictHandler
from .dictserver import DictServer, SocketInUse
from .logs import setup_logging

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DaemonArgs:
    socket: Path
    config: config.Config
    socket_mode: int
    socket_group: str | None
    restart_grace: float


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode such as 660") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode")
    return mode


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 to 60 seconds")
    return value


def parse_args(name: str, description: str, argv: list[str] | None) -> DaemonArgs:
    """Parse the daemon's arguments, set up logging and load chatmail.ini (exit 2 if bad)."""
    parser = argparse.ArgumentParser(prog=name, description=description)
    parser.add_argument(
        "socket",
        type=Path,
        metavar="SOCKET_PATH",
        help="Unix socket Dovecot connects to (proxy:SOCKET_PATH:name)",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG_PATH", help="chatmail.ini")
    parser.add_argument(
        "--socket-mode",
        type=_mode,
        default=0o660,
        help="permissions of the socket, octal (default: 660)",
    )
    # No --socket-owner: the daemon runs as vmail, and only root may give a file away. The
    # socket belongs to the daemon's user; a group lets other users' processes connect.
    parser.add_argument(
        "--socket-group",
        help="group to own the socket; the daemon's user must be a member (default: its own)",
    )
    parser.add_argument(
        "--restart-grace",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="after this daemon stops, how long its socket keeps queueing connections for the "
        "next process on the same socket, so no lookup fails during a restart "
        "(default: 10; 0: remove the socket at once)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="also log debug details (e.g. which lookups found an account)",
    )
    args = parser.parse_args(argv)
    setup_logging(name, logging.DEBUG if args.debug else logging.INFO)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        parser.exit(2, f"{name}: {exc}\n")
    return DaemonArgs(args.socket, cfg, args.socket_mode, args.socket_group, args.restart_grace)


async def serve_until_signalled(args: DaemonArgs, handler: DictHandler) -> int:
    """Serve ``handler`` on the daemon's socket until SIGTERM/SIGINT; the exit status.

    The signal handlers come first: a stop that arrives while the socket is being taken over
    from a predecessor must not kill the process with the sockets it has just adopted.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = DictServer(args.socket, handler)
    try:
        await server.start(args.socket_mode, args.socket_group, args.restart_grace)
    except (SocketInUse, OSError) as exc:
        log.error("cannot listen on %s: %s", args.socket, exc)
        return 1
    log.info("serving dict %r on %s", handler.name, args.socket)
    await stop.wait()
    log.info("stopping: finishing requests in progress")
    await server.close()
    log.info("stopped serving %s", args.socket)
    return 0
