"""A DNS server on loopback for tests: Debian's dnsmasq, serving the records a test gives it.

The test owns the process: dnsmasq runs in the foreground on 127.0.0.1 and a free port, reads no
configuration file, no /etc/hosts and no resolv.conf, has no upstream server and writes no PID
file; it logs to a file in the test's directory and is stopped by its PID. A name it holds no
record for is answered NXDOMAIN (``--local=/#/``), or REFUSED with ``refuse_others=True``, which
a resolver reports as a failed lookup (as it would SERVFAIL).

dnsmasq cannot change records while it runs (SIGHUP rereads only its hosts files), so ``start``
restarts it, on the same port when it can.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
from helpers_env import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


class DnsServer:
    """One dnsmasq process; ``address`` is its (host, port) while it runs."""

    def __init__(self, binary: str, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def start(
        self,
        txt: Mapping[str, str | Sequence[str]] | None = None,
        *,
        hosts: Mapping[str, str] | None = None,
        refuse_others: bool = False,
    ) -> DnsServer:
        """(Re)start serving TXT records ``txt`` (name -> one string or several) and A/AAAA
        records ``hosts`` (name -> IP). dnsmasq splits strings longer than 255 characters."""
        args = _record_args(txt or {}, hosts or {})
        self.stop()
        if not refuse_others:
            args.append("--local=/#/")
        for attempt in range(5):  # the port may be taken between free_port() and dnsmasq's bind
            if not self.port or attempt:
                self.port = free_port()
            if self._spawn(args):
                return self
        raise RuntimeError(f"dnsmasq did not start: {self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL after 5 s) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _spawn(self, record_args: list[str]) -> bool:
        args = [
            self.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",  # empty: none (the default is /run/dnsmasq.pid)
            "--log-facility=-",  # stderr, into log_path, not syslog
            f"--listen-address={HOST}",
            "--bind-interfaces",
            f"--port={self.port}",
            *record_args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False
            if self._answers():
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def _answers(self) -> bool:
        query = dns.message.make_query("ready.dnsserver.invalid.", "TXT")
        try:
            dns.query.udp(query, HOST, port=self.port, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return True


def _record_args(txt: Mapping[str, str | Sequence[str]], hosts: Mapping[str, str]) -> list[str]:
    args = []
    for name, value in txt.items():
        strings = [value] if isinstance(value, str) else list(value)
        for text in [name, *strings]:
            # dnsmasq splits its arguments at commas and keeps quotes as text
            if "," in text or "\n" in text or "\0" in text:
                raise ValueError(f"dnsmasq cannot serve {text!r} as given")
        args.append("--txt-record=" + ",".join([name, *strings]))
    args += [f"--host-record={name},{ip}" for name, ip in hosts.items()]
    return args
