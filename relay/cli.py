"""chatmail-relay: write chatmail.ini, render the relay's configuration, bring it up and down.

chatmail-relay init DOMAIN [PATH]        write a commented default chatmail.ini
chatmail-relay up [--config ...]         render, start (or restart if changed), wait for IMAP;
                                         install the daily expiry (cron file or systemd timer)
chatmail-relay down | status             stop it / say what runs and how the last expiry went
chatmail-relay render                    only render the configuration
chatmail-relay dkim-key [--config ...]   make the DKIM key if there is none; print its DNS record
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import secrets
import string
import sys
import time
from pathlib import Path

from chatmaild import config as chatmail_config
from chatmaild.logs import setup_logging
from metadata.pushqueue import count_pending

from . import dclogin, expirelog, ports, schedule, supervise, tls
from .render import Layout, Ports, RenderError, RenderParams, render

DEFAULT_CONFIG = Path("/usr/local/lib/chatmaild/chatmail.ini")
DEFAULT_STATE_DIR = Path("/var/lib/chatmail-relay")
DEFAULT_DOMAIN = "127.0.0.1"
PORT_HELP = {
    "imap": "IMAP with STARTTLS",
    "imaps": "IMAP with implicit TLS",
    "smtp": "SMTP from other relays, STARTTLS",
    "submission": "SMTP submission with STARTTLS",
    "submissions": "SMTP submission with implicit TLS",
}


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
        if name in ("up", "render", "status"):
            cmd.add_argument(
                "--config",
                type=Path,
                default=DEFAULT_CONFIG,
                help=f"chatmail.ini (default {DEFAULT_CONFIG})",
            )
        if name in ("up", "render"):
            cmd.add_argument(
                "--domain",
                default=DEFAULT_DOMAIN,
                help="mail domain for a new chatmail.ini if there is none "
                f"(default {DEFAULT_DOMAIN}: an IP-only relay)",
            )
            cmd.add_argument(
                "--listen",
                default="127.0.0.1",
                help="IP address Dovecot and Postfix listen on (default 127.0.0.1)",
            )
            cmd.add_argument(
                "--schedule-dir",
                type=Path,
                help="write the daily expiry's cron file (or systemd units) into this "
                "directory and install nothing (default: up installs them into "
                f"{schedule.SYSTEM_DIRS['cron']}, or {schedule.SYSTEM_DIRS['systemd']} where "
                "PID 1 is systemd; render writes them into the state directory)",
            )
            for port_name, default in dataclasses.asdict(Ports()).items():
                cmd.add_argument(
                    f"--{port_name}-port",
                    type=int,
                    default=default,
                    help=f"{PORT_HELP[port_name]} (default {default})",
                )
    dkim = sub.add_parser("dkim-key", help="make the DKIM key if missing, print its TXT record")
    dkim.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
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


def _print_login(
    cfg: chatmail_config.Config, params: RenderParams, layout: Layout, expiry: str
) -> None:
    addr, password = _new_login(cfg)
    host = cfg.mail_domain if params.listen in ("0.0.0.0", "::") else params.listen
    ports = params.ports
    self_signed = cfg.tls_external_cert_and_key is None
    url = dclogin.url(addr, password, host, ports.imaps, ports.submissions, self_signed)
    loopback = ipaddress.ip_address(params.listen).is_loopback
    where = "on loopback only" if loopback else f"on {params.listen}"
    print(f"""
Relay for {cfg.addr_domain} is up {where}:
  Postfix   SMTP {ports.smtp} (other relays, STARTTLS), submission {ports.submission} (STARTTLS) \
and {ports.submissions} (TLS)
  Dovecot   IMAP {ports.imap} (STARTTLS) and {ports.imaps} (TLS), LMTP
  filtermail (outgoing and incoming: OpenPGP-encrypted mail only), doveauth, lastlogin
  chatmail-metadata (push device tokens; notifications to {cfg.notification_url})
  expiry    {expiry}

A new account (created when it first logs in):
  address:  {addr}
  password: {password}
  server:   {host}, IMAP {ports.imaps} (TLS), SMTP {ports.submissions} (TLS)\
{", self-signed certificate" if self_signed else ""}

Scan this with Delta Chat ("Add account" > "Scan QR code"), or paste the line below it:
""")
    print(dclogin.terminal_qr(url))
    print(url)
    print(f"""
Logs: {layout.log_dir}/   Accounts: {cfg.mailboxes_dir}/   Stop: ./relay.sh down""")


def _init(args: argparse.Namespace) -> int:
    chatmail_config.write_default(args.domain, args.path)
    print(f"wrote {args.path}")
    return 0


def _down(args: argparse.Namespace) -> int:
    layout = Layout(args.state_dir.absolute())
    print("stopped" if supervise.down(layout) else "was not running")
    for path in schedule.deactivate(layout):
        print(f"removed {path}")
    return 0


def _status(args: argparse.Namespace) -> int:
    layout = Layout(args.state_dir.absolute())
    print(supervise.status(layout))
    if args.config.exists():
        queue = chatmail_config.load(args.config).notification_queue_dir
        print(f"push notifications pending: {count_pending(queue)} (in {queue})")
    try:
        run = expirelog.last_run(layout.expire_log)
    except OSError as exc:
        print(f"expiry: cannot read {layout.expire_log}: {exc.strerror or exc}")
    else:
        print(expirelog.describe(run, time.time(), layout.expire_log))
    return 0


def _render(args: argparse.Namespace) -> int:
    cfg = _load_or_init(args)
    for path in render(cfg, Layout(args.state_dir.absolute()), _params(args)):
        print(f"rendered {path}")
    return 0


def _up(args: argparse.Namespace) -> int:
    cfg = _load_or_init(args)
    layout, params = Layout(args.state_dir.absolute()), _params(args)
    install = args.schedule_dir is None  # else: only render the schedule there
    runner = None
    if install:
        params, runner = schedule.for_install(params, layout)
        schedule.record(params, layout)
    record = supervise.ensure_dkim_key(cfg)
    if record is not None:
        print(f"made the DKIM key {cfg.dkim_key_path}; publish this DNS record:\n{record}")
    supervise.up(cfg, layout, params)
    if install:
        schedule.enable(params)
    _print_login(cfg, params, layout, schedule.summary(cfg, params, layout, runner))
    return 0


def _dkim_key(args: argparse.Namespace) -> int:
    cfg = chatmail_config.load(args.config)
    record = supervise.make_dkim_key(cfg)
    if record is None:
        from filtermail import dkim  # only this command needs it

        record = dkim.public_txt(cfg.dkim_key_path, cfg.dkim_selector, cfg.mail_domain)
    else:
        print(f"wrote {cfg.dkim_key_path}")
    print(f"Publish this DNS record for {cfg.mail_domain}:\n{record}")
    return 0


def _params(args: argparse.Namespace) -> RenderParams:
    chosen = {name: getattr(args, f"{name}_port") for name in dataclasses.asdict(Ports())}
    return RenderParams(
        ports=Ports(**chosen),
        listen=args.listen,
        scheduler=schedule.pid1_scheduler(),
        schedule_dir=args.schedule_dir and args.schedule_dir.absolute(),
    )


COMMANDS = {
    "init": _init,
    "up": _up,
    "down": _down,
    "status": _status,
    "render": _render,
    "dkim-key": _dkim_key,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("chatmail-relay", logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (
        chatmail_config.ConfigError,
        supervise.RelayError,
        RenderError,
        ports.PortInUse,
        tls.CertificateError,
    ) as exc:
        print(f"chatmail-relay: {exc}", file=sys.stderr)
    except FileExistsError as exc:
        print(f"chatmail-relay: {exc.filename} exists: not overwriting it", file=sys.stderr)
    except OSError as exc:
        print(f"chatmail-relay: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
