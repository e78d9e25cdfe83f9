"""Render Dovecot and supervisor configuration from chatmail.ini into a state directory.

One function, ``render``, used by the tests, by ``chatmail-relay up`` and by production, so what
is tested is what ships. Everything that differs between those (directory, ports, listen address,
where the daemons' executables are) is a parameter; everything else comes from chatmail.ini.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from chatmaild.config import Config
from chatmaild.mailbox import atomic_write

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Ports:
    imap: int = 143


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
    def dovecot_base_dir(self) -> Path:
        return self.dovecot_dir / "run"

    @property
    def dovecot_state_dir(self) -> Path:
        return self.dovecot_dir / "state"

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
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def supervisord_conf(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def supervisord_pid(self) -> Path:
        return self.state_dir / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        return self.state_dir / "supervisor.sock"


@dataclass(frozen=True)
class RenderParams:
    """What differs between a test relay, the loopback relay and production."""

    ports: Ports = field(default_factory=Ports)
    listen: str = "127.0.0.1"
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    dovecot_bin: str = "/usr/sbin/dovecot"
    vmail_uid: int | None = None  # looked up from chatmail.ini's vmail_user when None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(config: Config, layout: Layout, params: RenderParams | None = None) -> list[Path]:
    """Write the relay's configuration files under ``layout``; return those that changed.

    Only writes files whose content changed, so a caller can tell whether a restart is needed
    by comparing before and after (see ``supervise.up``).
    """
    params = params or RenderParams()
    vmail_uid = params.vmail_uid
    if vmail_uid is None:
        try:
            vmail_uid = pwd.getpwnam(config.vmail_user).pw_uid
        except KeyError:
            raise SystemExit(
                f"unix user {config.vmail_user!r} (vmail_user) does not exist"
            ) from None
    # the daemons read chatmail.ini when they start: a changed file must change the rendering
    digest = hashlib.sha256(config.path.read_bytes()).hexdigest() if config.path.exists() else ""
    context = {
        "config": config,
        "config_digest": digest,
        "layout": layout,
        "params": params,
        "vmail_uid": vmail_uid,
    }
    env = _environment()
    outputs = {
        layout.dovecot_conf: "dovecot.conf.j2",
        layout.auth_dict_conf: "auth-dict.conf.ext.j2",
        layout.supervisord_conf: "supervisord.conf.j2",
    }
    changed = []
    for path, template in outputs.items():
        text = env.get_template(template).render(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text.encode(), mode=0o644)
            changed.append(path)
    os.chmod(layout.state_dir, 0o755)
    return changed
