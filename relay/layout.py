"""Where a relay's files live and which public ports it serves: the state directory's layout
(rendered configuration, sockets, logs, pid files) and the ports, the same for tests, the
loopback relay and production (``relay.render`` takes both as parameters)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ports:
    """The public ports; the loopback ones (filters, reinjection) are chatmail.ini's."""

    imap: int = 143  # STARTTLS
    imaps: int = 993  # implicit TLS
    smtp: int = 25  # other relays, STARTTLS
    submission: int = 587  # clients, STARTTLS
    submissions: int = 465  # clients, implicit TLS

    def public(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Layout:
    """Where a relay's rendered files, sockets and logs live under its state directory."""

    state_dir: Path

    @property
    def dovecot_dir(self) -> Path:
        return self.state_dir / "dovecot"

    @property
    def dovecot_conf(self) -> Path:
        return self.dovecot_dir / "dovecot.conf"

    @property
    def auth_dict_conf(self) -> Path:
        return self.dovecot_dir / "auth-dict.conf.ext"

    @property
    def auth_create_conf(self) -> Path:
        return self.dovecot_dir / "auth-dict-create.conf.ext"

    @property
    def dovecot_applied(self) -> Path:
        """The digest of the Dovecot configuration the running Dovecot last read."""
        return self.dovecot_dir / "applied.sha256"

    @property
    def dovecot_base_dir(self) -> Path:
        return self.dovecot_dir / "run"

    @property
    def dovecot_state_dir(self) -> Path:
        return self.dovecot_dir / "state"

    @property
    def lmtp_socket(self) -> Path:
        """Dovecot's LMTP, where Postfix delivers local mail (owned by postfix)."""
        return self.dovecot_base_dir / "postfix-lmtp"

    @property
    def sasl_socket(self) -> Path:
        """Dovecot's auth service, which checks Postfix's SMTP AUTH logins."""
        return self.dovecot_base_dir / "postfix-auth"

    @property
    def postfix_dir(self) -> Path:
        """Postfix's private instance: main.cf, master.cf (``postfix -c``)."""
        return self.state_dir / "postfix"

    @property
    def postfix_queue(self) -> Path:
        return self.state_dir / "postfix-queue"

    @property
    def postfix_data(self) -> Path:
        return self.state_dir / "postfix-data"

    @property
    def postfix_run(self) -> Path:
        return self.postfix_dir / "run-master"

    @property
    def tls_dir(self) -> Path:
        """The self-signed certificate of a relay without its own (made once, kept)."""
        return self.state_dir / "tls"

    @property
    def socket_dir(self) -> Path:
        """The daemons' sockets; owned by the vmail user."""
        return self.state_dir / "sockets"

    @property
    def doveauth_socket(self) -> Path:
        return self.socket_dir / "doveauth.socket"

    @property
    def lastlogin_socket(self) -> Path:
        return self.socket_dir / "lastlogin.socket"

    @property
    def metadata_socket(self) -> Path:
        return self.socket_dir / "metadata.socket"

    @property
    def push_lua(self) -> Path:
        """Dovecot's push hook (push_notification_lua), run by lmtp."""
        return self.dovecot_dir / "push_notification.lua"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def expire_log_dir(self) -> Path:
        """The daily expiry's logs, the last runs' (owned by the vmail user, which runs it)."""
        return self.log_dir / "expire"

    @property
    def expire_log(self) -> Path:
        return self.expire_log_dir / "expire.log"

    @property
    def schedule_dir(self) -> Path:
        """Where the expiry's cron file or systemd units go unless ``RenderParams`` names a
        directory: here, no cron or systemd reads them (``up`` installs them elsewhere)."""
        return self.state_dir / "schedule"

    @property
    def schedule_installed(self) -> Path:
        """The files ``up`` installed for the schedule, one per line; ``down`` removes them."""
        return self.state_dir / "schedule.installed"

    @property
    def supervisord_conf(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def supervisord_pid(self) -> Path:
        return self.state_dir / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        return self.state_dir / "supervisor.sock"
