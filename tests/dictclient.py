"""A minimal blocking dict-protocol client, speaking to our daemons as Dovecot does."""

from __future__ import annotations

import socket
from pathlib import Path


def escape_E(text: str) -> str:
    """Dovecot's %E: a backslash before backslash, double and single quote."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")


class DictClient:
    def __init__(self, path: Path, dict_name: str = "auth", timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))  # blocking: waits while the listen backlog is full
        self.sock.settimeout(timeout)
        self.rfile = self.sock.makefile("rb")
        self.send(f"H3\t2\t0\t\t{dict_name}\n".encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        return line

    def lookup(self, key: str, user: str = "") -> bytes:
        self.send(f"L{key}\t{user}\n".encode("utf-8", "surrogateescape"))
        return self.readline()

    def passdb(self, addr: str, password: str) -> bytes:
        return self.lookup(f'shared/passdb/{escape_E(password)}"{escape_E(addr)}', addr)

    def iterate(self, path: str) -> list[bytes]:
        self.send(f"I0\t0\t{path}\t*\n".encode())
        rows = []
        while (line := self.readline()) != b"\n":
            if line.startswith(b"F"):
                raise RuntimeError("iteration failed")
            rows.append(line)
        return rows

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self) -> DictClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
