"""Render Dovecot, Postfix and supervisor configuration and the daily expiry's schedule from
chatmail.ini into a state directory.

One function, ``render``, used by the tests, by ``chatmail-relay up`` and by production, so what
is tested is what ships. Everything that differs between those (directory, ports, listen address,
where the daemons' executables are, cron or systemd and where their files go) is a parameter;
everything else comes from chatmail.ini.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import os
import pwd
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from chatmaild.config import SMTP_RECIPIENT_LIMIT, Config
from chatmaild.mailbox import atomic_write
from expire.quota import MB, TARGET, WARNING

from .layout import Layout, Ports
from .values import RenderError, TemplateValues

__all__ = ["Layout", "Ports", "RenderError", "RenderParams", "code_digest", "render"]

TEMPLATES = Path(__file__).parent / "templates"
DAEMON_PACKAGES = ("chatmaild", "doveauth", "filtermail", "metadata", "expire")
# The daily expiry's files (name -> template) for each scheduler. cron ignores a file in
# /etc/cron.d whose name has a dot.
SCHEDULE_TEMPLATES = {
    "cron": {"chatmail-expire": "expire.cron.j2"},
    "systemd": {
        "chatmail-expire.service": "expire.service.j2",
        "chatmail-expire.timer": "expire.timer.j2",
    },
}
EXPIRE_HOUR = 3  # local time; the minute comes from the mail domain (see expire_time)
EXPIRE_TIMER_DELAY = 15  # minutes: a systemd timer starts the run up to this much later


@dataclass(frozen=True)
class RenderParams:
    """What differs between a test relay, the loopback relay and production."""

    ports: Ports = field(default_factory=Ports)
    listen: str = "127.0.0.1"
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    dovecot_bin: str = "/usr/sbin/dovecot"
    postfix_master: str = "/usr/lib/postfix/sbin/master"
    vmail_uid: int | None = None  # looked up from chatmail.ini's vmail_user when None
    # The daily expiry: a file for cron, or a service and a timer for systemd, written into
    # schedule_dir (None: the state directory's, which nothing reads).
    scheduler: str = "cron"
    schedule_dir: Path | None = None
    run_cron: bool = False  # supervisord runs cron: no other cron daemon does
    cron_bin: str = "/usr/sbin/cron"

    def schedule_files(self, layout: Layout) -> tuple[Path, ...]:
        """The files the schedule is rendered into."""
        directory = self.schedule_dir or layout.schedule_dir
        return tuple(directory / name for name in SCHEDULE_TEMPLATES[self.scheduler])


def expire_time(mail_domain: str) -> tuple[int, int]:
    """(hour, minute) of the daily expiry: a minute of EXPIRE_HOUR that differs between
    relays (many on one host or one storage should not all start together) but stays the same
    for one, so rendering again changes nothing."""
    return EXPIRE_HOUR, hashlib.sha256(mail_domain.encode()).digest()[0] % 60


def code_digest() -> str:
    """A digest of the installed daemon code, so an upgrade restarts the daemons."""
    digest = hashlib.sha256()
    for package in DAEMON_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        for path in sorted(Path(spec.origin).parent.rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cron_escape(command: str) -> str:
    """A command as a crontab line must hold it: cron turns an unescaped % into a newline."""
    return command.replace("%", "\\%")


def systemd_escape(command: str) -> str:
    """A command line as a unit file must hold it: % starts a specifier, $ a variable."""
    return command.replace("%", "%%").replace("$", "$$")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["cron"] = cron_escape
    env.filters["systemd"] = systemd_escape
    return env


def template_values(config: Config, layout: Layout, params: RenderParams) -> TemplateValues:
    """Everything the templates use, checked (RenderError names the setting to fix)."""
    vmail_uid = params.vmail_uid
    if vmail_uid is None:
        try:
            vmail_uid = pwd.getpwnam(config.vmail_user).pw_uid
        except KeyError:
            raise RenderError(
                f"unix user {config.vmail_user!r} (vmail_user) does not exist"
            ) from None
    # the daemons read chatmail.ini and their code when they start: changes must show
    path = config.path
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    if config.tls_external_cert_and_key is None:
        cert, key = layout.tls_dir / "cert.pem", layout.tls_dir / "key.pem"
    else:
        cert, key = config.tls_external_cert_and_key
    try:
        loopback = ipaddress.ip_address(params.listen).is_loopback
    except ValueError:  # TemplateValues says what is wrong with it
        loopback = False
    if params.run_cron and params.scheduler != "cron":
        raise RenderError(
            f"supervisord runs cron only for the cron scheduler, not {params.scheduler}"
        )
    hour, minute = expire_time(config.mail_domain)
    return TemplateValues(
        mail_domain=config.mail_domain,
        addr_domain=config.addr_domain,
        hostname="localhost" if config.is_ip_relay else config.mail_domain,
        loopback_only=loopback,
        tls_cert=cert,
        tls_key=key,
        smtp_port=params.ports.smtp,
        submission_port=params.ports.submission,
        submissions_port=params.ports.submissions,
        imaps_port=params.ports.imaps,
        filtermail_port=config.filtermail_smtp_port,
        filtermail_port_incoming=config.filtermail_smtp_port_incoming,
        reinject_port=config.postfix_reinject_port,
        reinject_port_incoming=config.postfix_reinject_port_incoming,
        max_message_size=config.max_message_size,
        max_smtp_connections=config.max_smtp_connections,
        max_mailbox_size=config.max_mailbox_size,
        quota_warning_percent=round(WARNING * 100),
        quota_target_mb=int(config.max_mailbox_size * TARGET) // MB,
        smtp_recipient_limit=SMTP_RECIPIENT_LIMIT,
        postfix_master=Path(params.postfix_master),
        config_path=path,
        vmail_user=config.vmail_user,
        vmail_uid=vmail_uid,
        max_imap_connections=config.max_imap_connections,
        listen=params.listen,
        imap_port=params.ports.imap,
        bin_dir=params.bin_dir,
        dovecot_bin=Path(params.dovecot_bin),
        state_dir=layout.state_dir,
        mailboxes_dir=config.mailboxes_dir,
        admin_contact=f"mailto:{config.privacy_mail}" if config.privacy_mail else "",
        config_digest=digest,
        code_digest=code_digest(),
        scheduler=params.scheduler,
        expire_hour=hour,
        expire_minute=minute,
        expire_timer_delay=EXPIRE_TIMER_DELAY,
        run_cron=params.run_cron,
        cron_bin=Path(params.cron_bin),
    )


def render(config: Config, layout: Layout, params: RenderParams | None = None) -> list[Path]:
    """Write the relay's configuration files under ``layout``; return those that changed.

    Only writes files whose content changed, so a caller can tell whether a restart is needed
    by comparing before and after (see ``supervise.up``).
    """
    params = params or RenderParams()
    values = template_values(config, layout, params)
    context = {"v": values, "layout": Layout(values.state_dir)}
    env = _environment()
    outputs = {
        layout.dovecot_conf: ("dovecot.conf.j2", {}),
        layout.auth_dict_conf: ("auth-dict.conf.ext.j2", {"creating": False}),
        layout.auth_create_conf: ("auth-dict.conf.ext.j2", {"creating": True}),
        layout.supervisord_conf: ("supervisord.conf.j2", {}),
        layout.postfix_dir / "main.cf": ("main.cf.j2", {}),
        layout.postfix_dir / "master.cf": ("master.cf.j2", {}),
        layout.postfix_dir / "sender_login_maps": ("sender_login_maps.j2", {}),
        layout.postfix_run: ("run-master.j2", {}),
        layout.push_lua: ("push_notification.lua.j2", {}),
    }
    for path in params.schedule_files(layout):
        outputs[path] = (SCHEDULE_TEMPLATES[params.scheduler][path.name], {})
    changed = []
    for path, (template, extra) in outputs.items():
        text = env.get_template(template).render({**context, **extra})
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o755 if path == layout.postfix_run else 0o644
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text.encode(), mode=mode)
            changed.append(path)
    os.chmod(layout.state_dir, 0o755)
    return changed
