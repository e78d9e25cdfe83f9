"""Delta Chat's own client against a relay that ``chatmail-relay up`` brought up.

``UpRelay`` runs the installed ``chatmail-relay`` console script (the README's ``./relay.sh up``
code path) for the IP-only domain 127.0.0.1, with its own state dir, chatmail.ini and free
loopback ports; each ``up`` prints a new account as a ``dclogin:`` URL. ``Device`` is one Delta
Chat installation: a ``deltachat-rpc-server`` process of its own (started and stopped here)
with one account configured from such a URL. Every wait has a deadline; a timeout reports the
client's warnings and errors, which carry the relay's SMTP/IMAP replies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from urllib.parse import parse_qs, unquote

from deltachat_rpc_client import Account, AttrDict, DeltaChat, Rpc
from relays import bin_dir, chatmail_relay, free_port_args, relaxed_ini

DOMAIN = "127.0.0.1"
RPC_SERVER_STOP_TIMEOUT = 10


@dataclass(frozen=True)
class Login:
    """What a ``dclogin:`` URL holds that a test needs besides the URL itself."""

    url: str
    addr: str
    password: str

    @classmethod
    def parse(cls, url: str) -> Login:
        addr, _, query = url.removeprefix("dclogin:").partition("?")
        (password,) = parse_qs(query)["p"]  # parse_qs percent-decodes
        return cls(url, unquote(addr), password)


class UpRelay:
    """A relay run by the installed ``chatmail-relay up``, in a temp dir of its own."""

    def __init__(
        self, extra_ini: str = "", environ: dict[str, str] | None = None, **values: str
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="chatmail-dc-"))
        self.tmp.chmod(0o755)  # the daemons run as vmail and must traverse it
        self.ini = self.tmp / "chatmail.ini"
        self.state = self.tmp / "state"
        self.mailboxes_dir = self.tmp / "mail"
        self.port_args = free_port_args()
        self.ports = dict(zip(self.port_args[::2], map(int, self.port_args[1::2]), strict=True))
        self.environ = environ or {}
        init = chatmail_relay("init", DOMAIN, str(self.ini))
        assert init.returncode == 0, init.stderr
        self.ini.write_text(relaxed_ini(self.ini.read_text(), self.tmp, **values) + extra_ini)

    def port(self, name: str) -> int:
        return self.ports[f"--{name}-port"]

    def up(self) -> Login:
        """Run ``up``; return the new account it printed."""
        args = ("--config", str(self.ini), "--state-dir", str(self.state), *self.port_args)
        args += ("--schedule-dir", str(self.tmp / "cron.d"))  # a test installs nothing
        result = chatmail_relay("up", *args, environ=self.environ)
        assert result.returncode == 0, f"{result.stderr}\n{self.status()}"
        urls = re.findall(r"^dclogin:\S+$", result.stdout, flags=re.MULTILINE)
        assert len(urls) == 1, result.stdout
        return Login.parse(urls[0])

    def supervisord_pid(self) -> str:
        return (self.state / "supervisord.pid").read_text().strip()

    def stored_messages(self, addr: str) -> list[bytes]:
        """The raw messages in ``addr``'s maildir, as Dovecot stored them."""
        home = self.mailboxes_dir / addr
        files = [*home.glob("**/new/*"), *home.glob("**/cur/*")]
        return [path.read_bytes() for path in sorted(files)]

    def status(self) -> str:
        return chatmail_relay("status", "--state-dir", str(self.state)).stdout

    def down(self, keep_files: bool = False) -> None:
        """Stop the relay; remove its files unless ``keep_files`` (a test failed: its logs)."""
        chatmail_relay("down", "--state-dir", str(self.state))
        if keep_files:
            print(f"kept {self.tmp} for its logs in {self.state / 'log'}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def rpc_server_path() -> Path:
    return bin_dir() / "deltachat-rpc-server"


@dataclass
class Device:
    """One Delta Chat installation: its own rpc-server process and accounts dir, one account."""

    rpc: Rpc
    account: Account
    login: Login
    problems: list[str] = field(default_factory=list)  # the client's warnings and errors

    @classmethod
    def start(cls, accounts_dir: Path, login: Login) -> Device:
        """Start the rpc-server; configure the account from ``login``'s URL and bring it online."""
        rpc = Rpc(accounts_dir=str(accounts_dir), rpc_server_path=str(rpc_server_path()))
        rpc.start()
        try:
            account = DeltaChat(rpc).add_account()
            device = cls(rpc, account, login)
            device.configure()
        except BaseException:
            stop_rpc_server(rpc)
            raise
        return device

    def configure(self) -> None:
        self.account.set_config("displayname", self.login.addr.split("@")[0])
        self.account.add_transport_from_qr(self.login.url)
        self.account.start_io()
        self.wait_for("ImapInboxIdle", timeout=20)

    @property
    def addr(self) -> str:
        return self.login.addr

    def wait_for(
        self,
        kind: str,
        timeout: float = 20,
        match: Callable[[AttrDict], bool] = lambda _event: True,
    ) -> AttrDict:
        """The next event of ``kind`` that ``match``es, within ``timeout`` seconds.

        The client's own sends failing (MsgFailed) end the wait at once.
        """
        queue = self.rpc.get_queue(self.account.id)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = AttrDict(queue.get(timeout=max(remaining, 0)))
            except Empty:
                raise AssertionError(
                    f"{self.addr}: no {kind} within {timeout}s; the client reported: "
                    + ("\n".join(self.problems[-10:]) or "nothing")
                ) from None
            if event.kind in ("Warning", "Error"):
                self.problems.append(f"{event.kind}: {event.msg}")
            if event.kind == "MsgFailed" and kind != "MsgFailed":
                error = self.account.get_message_by_id(event.msg_id).get_snapshot().error
                raise AssertionError(f"{self.addr}: sending failed: {error}")
            if event.kind == kind and match(event):
                return event

    def stop(self) -> None:
        stop_rpc_server(self.rpc)


def stop_rpc_server(rpc: Rpc) -> None:
    """Stop the rpc-server process this test started (EOF on its stdin), kill it if it hangs."""
    try:
        rpc.close()
    finally:
        try:
            rpc.process.wait(RPC_SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            rpc.process.kill()
            rpc.process.wait()
