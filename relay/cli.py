"""chatmail-relay: write chatmail.ini, render the relay's configuration, bring it up and down.

chatmail-relay init DOMAIN [PATH]        write a commented default chatmail.ini
chatmail-relay up [--config ...]         render, start (or restart if changed), wait for IMAP
chatmail-relay down | status             stop it / say what runs
chatmail-relay render                    only render the configuration
"""

from __future__ import annotations

import argparse
import logging
import secrets
import string
import sys
from pathlib import Path

from chatmaild import config as chatmail_config
from chatmaild.logs import setup_logging

from . import supervise
from .render import Layout, Ports, RenderError, RenderParams, render

DEFAULT_CONFIG = Path("/usr/local/lib/chatmaild/chatmail.ini")
DEFAULT_STATE_DIR = Path("/var/lib/chatmail-relay")
DEFAULT_DOMAIN = "127.0.0.1"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatmail-relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a commented default chatmail.ini")
    init.add_argument("domain", help="the relay's mail domain (or an IPv4 address)")
    init.add_argument("path", nargs="?", type=Path, default=DEFAULT_CONFIG)
    for name, text in (
        ("up", "start the relay (or restart it if its configuration changed)"),
        ("down", "stop the relay"),
        ("status", "say what runs"),
        ("render", "render the configuration only"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--state-dir",
            type=Path,
            default=DEFAULT_STATE_DIR,
            help=f"rendered configuration, sockets, logs (default {DEFAULT_STATE_DIR})",
        )
        if name in ("up", "render"):
            cmd.add_argument(
                "--config",
                type=Path,
                default=DEFAULT_CONFIG,
                help=f"chatmail.ini (default {DEFAULT_CONFIG})",
            )
            cmd.add_argument(
                "--domain",
                default=DEFAULT_DOMAIN,
                help="mail domain for a new chatmail.ini if there is none "
                f"(default {DEFAULT_DOMAIN}: an IP-only relay)",
            )
            cmd.add_argument("--listen", default="127.0.0.1", help="address Dovecot listens on")
            cmd.add_argument("--imap-port", type=int, default=143)
    return parser


def _load_or_init(args: argparse.Namespace) -> chatmail_config.Config:
    if not args.config.exists():
        args.config.parent.mkdir(parents=True, exist_ok=True)
        chatmail_config.write_default(args.domain, args.config)
        args.config.chmod(0o644)
        print(f"wrote a default {args.config} for {args.domain}")
    return chatmail_config.load(args.config)


def _new_login(cfg: chatmail_config.Config) -> tuple[str, str]:
    alphabet = string.ascii_lowercase + string.digits
    name = "".join(secrets.choice(alphabet) for _ in range(cfg.username_max_length))
    password = "".join(secrets.choice(alphabet) for _ in range(max(20, cfg.password_min_length)))
    return f"{name}@{cfg.addr_domain}", password


def _print_login(cfg: chatmail_config.Config, params: RenderParams, layout: Layout) -> None:
    addr, password = _new_login(cfg)
    host, port = params.listen, params.ports.imap
    print(f"""
Relay for {cfg.addr_domain} is up: Dovecot IMAP with doveauth (accounts) and lastlogin.
Not yet: SMTP/Postfix, mail filtering, push notifications, TLS, expiry.

  IMAP server: {host} port {port} (plain IMAP, loopback only, no TLS yet)
  address:     {addr}
  password:    {password}

That account does not exist yet: the first login creates it. For example:
  python3 -c "import imaplib; c = imaplib.IMAP4('{host}', {port}); \\
print(c.login('{addr}', '{password}'))"

Logs: {layout.log_dir}/   Accounts: {cfg.mailboxes_dir}/   Stop: ./relay.sh down""")


def _init(args: argparse.Namespace) -> int:
    chatmail_config.write_default(args.domain, args.path)
    print(f"wrote {args.path}")
    return 0


def _down(args: argparse.Namespace) -> int:
    print("stopped" if supervise.down(Layout(args.state_dir.absolute())) else "was not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    print(supervise.status(Layout(args.state_dir.absolute())))
    return 0


def _render(args: argparse.Namespace) -> int:
    cfg = _load_or_init(args)
    for path in render(cfg, Layout(args.state_dir.absolute()), _params(args)):
        print(f"rendered {path}")
    return 0


def _up(args: argparse.Namespace) -> int:
    cfg = _load_or_init(args)
    layout, params = Layout(args.state_dir.absolute()), _params(args)
    supervise.up(cfg, layout, params)
    _print_login(cfg, params, layout)
    return 0


def _params(args: argparse.Namespace) -> RenderParams:
    return RenderParams(ports=Ports(imap=args.imap_port), listen=args.listen)


COMMANDS = {"init": _init, "up": _up, "down": _down, "status": _status, "render": _render}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("chatmail-relay", logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (chatmail_config.ConfigError, supervise.RelayError, RenderError) as exc:
        print(f"chatmail-relay: {exc}", file=sys.stderr)
    except FileExistsError as exc:
        print(f"chatmail-relay: {exc.filename} exists: not overwriting it", file=sys.stderr)
    except OSError as exc:
        print(f"chatmail-relay: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
