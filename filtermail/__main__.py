"""``filtermail CONFIG_PATH outgoing|incoming``: the command line of existing relays' units.

The ports come from chatmail.ini; ``--listen``, ``--port`` and ``--reinject-port`` override them
(for tests and other wiring), ``--debug`` logs more.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
from pathlib import Path

from chatmaild import config
from chatmaild.logs import setup_logging

from .policy import DIRECTIONS


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="filtermail",
        description="Postfix's before-queue filter: passes only encrypted mail (and a few "
        "shapes chat clients need), then hands it back to Postfix.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG_PATH", help="chatmail.ini")
    parser.add_argument("direction", choices=DIRECTIONS, help="which filter this process is")
    parser.add_argument("--listen", type=_address, help="IP address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, help="port to listen on (chatmail.ini's filtermail port)"
    )
    parser.add_argument(
        "--reinject-port",
        type=_port,
        help="Postfix's reinjection port on 127.0.0.1 (chatmail.ini's postfix_reinject port)",
    )
    parser.add_argument("--debug", action="store_true", help="also log debug details")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("filtermail", logging.DEBUG if args.debug else logging.INFO)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        logging.getLogger("filtermail").error("%s", exc)
        return 2
    # the server's imports (email, ctypes) only now: a bad command line fails fast
    from .server import Ports, Settings, dkim_parts, serve

    defaults = Ports.from_config(cfg, args.direction)
    ports = Ports(
        args.listen or defaults.listen,
        args.port or defaults.port,
        args.reinject_port or defaults.reinject_port,
    )
    try:
        signer, verifier = dkim_parts(cfg, args.direction)
    except (ImportError, OSError, ValueError) as exc:
        logging.getLogger("filtermail").error("DKIM cannot be set up: %s", exc)
        return 1
    return asyncio.run(serve(Settings.from_config(cfg, args.direction), ports, signer, verifier))


if __name__ == "__main__":
    raise SystemExit(main())
