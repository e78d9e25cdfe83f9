"""Before a relay starts: is each of its ports free? If not, say which process holds it.

A Debian machine often runs an MTA on port 25 already (exim4, a system Postfix); Postfix would
then log a bind error and exit in a loop under supervisord. Checking first turns that into one
clear message naming the port and the process.
"""

from __future__ import annotations

import errno
import socket

import psutil

from chatmaild.config import Config

from .render import RenderParams


class PortInUse(RuntimeError):
    """A port the relay needs is taken; the message names the port and its holder."""


def relay_ports(config: Config, params: RenderParams) -> dict[str, tuple[str, int]]:
    """What the relay listens on: name -> (address, port)."""
    found = {name: (params.listen, port) for name, port in params.ports.public().items()}
    for name in (
        "filtermail_smtp_port",
        "filtermail_smtp_port_incoming",
        "postfix_reinject_port",
        "postfix_reinject_port_incoming",
    ):
        found[name] = ("127.0.0.1", getattr(config, name))
    return found


def _listeners(port: int) -> list:
    return [
        conn
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
    ]


def listening(port: int) -> bool:
    """Whether something listens on TCP ``port`` (seen without connecting to it)."""
    try:
        return bool(_listeners(port))
    except (psutil.AccessDenied, OSError):
        return False


def holder(port: int) -> str:
    """Who listens on TCP ``port``: 'name (pid N)', or a hint if that cannot be seen."""
    try:
        conns = _listeners(port)
    except (psutil.AccessDenied, OSError):
        return "another process (run as root to see which)"
    for conn in conns:
        if conn.pid is None:
            return "another process"
        try:
            return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
        except psutil.Error:
            return f"pid {conn.pid}"
    return "another process"


def check_free(wanted: dict[str, tuple[str, int]]) -> None:
    """Raise PortInUse for the first port that cannot be bound, or for a port used twice."""
    seen: dict[int, str] = {}
    for name, (address, port) in wanted.items():
        if port in seen:
            raise PortInUse(f"port {port} is set for both {seen[port]} and {name}")
        seen[port] = name
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise PortInUse(
                        f"cannot listen on {address} port {port} ({name}): {exc.strerror}"
                    ) from None
                raise PortInUse(
                    f"port {port} ({name}) on {address} is in use by {holder(port)}: stop it, "
                    "or give the relay another port (see --help)"
                ) from None
