"""A stand-in push gateway on loopback: records each POST body (a device token) with its time.

Run as its own process (``python gateway.py PORT [CERT KEY]``; ``running_gateway`` does that),
so its timestamps do not wait for the benchmark's own threads. It speaks HTTP/1.1 with
kept-alive connections, as the notifier's HTTP client does: HTTPS as the real gateway, with a
self-signed certificate for 127.0.0.1 that the relay is told to trust (``SSL_CERT_FILE``
in its environment: ``environ``), or plain HTTP. It answers every POST with the status it is
told (200 by default; 500 to make the notifier queue and retry). It imports nothing but the
standard library, so it runs from this file alone.

Control requests (from the benchmark, on the same port): ``PUT /bench/status`` with the status
as its body; ``GET /bench/posts?from=N&ok=M&wait=S`` answers, once M POSTs in all were answered
200 (delivered) or after S seconds, ``count`` (all POSTs), ``ok`` (those answered 200) and the
POSTs from the N-th on, each ``[time.monotonic(), body, status answered]`` (one clock for every
process on the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

CONTROL = "/bench/"
REASONS = {200: "OK", 400: "Bad Request", 410: "Gone", 500: "Internal Server Error"}
Post = tuple[float, str, int]  # time.monotonic() it arrived, its body, the status answered


class Gateway:
    def __init__(self) -> None:
        self.status = 200
        self.posts: list[Post] = []
        self.ok = 0  # POSTs answered 200
        self.arrived = asyncio.Condition()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                method, target, body = await read_request(reader)
                status, payload = await self.answer(method, target, body)
                reason = REASONS.get(status, "Other")
                head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(payload)}\r\n"
                writer.write(head.encode() + b"\r\n" + payload)
                await writer.drain()
        writer.close()

    async def answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        path = urlsplit(target).path
        if not path.startswith(CONTROL):
            if method != "POST":
                return 400, b""
            self.posts.append((time.monotonic(), body.decode("utf-8", "replace"), self.status))
            self.ok += self.status == 200
            async with self.arrived:
                self.arrived.notify_all()
            return self.status, b""
        if method == "PUT" and path == CONTROL + "status":
            self.status = int(body)
            return 200, b""
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        start, least = int(query.get("from", 0)), int(query.get("ok", 0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(float(query.get("wait", 0))), self.arrived:
                await self.arrived.wait_for(lambda: self.ok >= least)
        state = {"count": len(self.posts), "ok": self.ok, "posts": self.posts[start:]}
        return 200, json.dumps(state).encode()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    """(method, target, body) of the next request (IncompleteReadError when the client closed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # no trailers
        return method, target, body
    return method, target, await reader.readexactly(int(fields.get("content-length", 0)))


async def serve(port: int, tls: ssl.SSLContext | None) -> None:
    gateway = Gateway()
    server = await asyncio.start_server(gateway.handle, "127.0.0.1", port, ssl=tls, backlog=512)
    async with server:
        await server.serve_forever()


# -- the benchmark's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayClient:
    """The benchmark's handle on a running gateway."""

    port: int
    ca_file: str = ""  # its certificate, if it speaks HTTPS

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}/notify"

    @property
    def environ(self) -> dict[str, str]:
        """What the relay's environment needs to trust this gateway."""
        return {"SSL_CERT_FILE": self.ca_file} if self.ca_file else {}

    def _request(self, method: str, path: str, body: bytes = b"", timeout: float = 10) -> bytes:
        if self.ca_file:
            context = ssl.create_default_context(cafile=self.ca_file)
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout + 10, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout + 10)
        try:
            conn.request(method, path, body)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"gateway answered {response.status} to {method} {path}")
            return data
        finally:
            conn.close()

    def answer_with(self, status: int) -> None:
        """Answer every POST from now on with ``status``."""
        self._request("PUT", CONTROL + "status", str(status).encode())

    def posts(self, start: int = 0, ok: int = 0, wait: float = 0) -> list[Post]:
        """The POSTs from the ``start``-th on, once ``ok`` in all were answered 200 (or after
        ``wait`` seconds)."""
        path = f"{CONTROL}posts?from={start}&ok={ok}&wait={wait}"
        return [tuple(p) for p in json.loads(self._request("GET", path, timeout=wait))["posts"]]

    def counts(self) -> tuple[int, int]:
        """(POSTs so far, those answered 200)."""
        state = json.loads(self._request("GET", f"{CONTROL}posts?from={2**62}"))
        return state["count"], state["ok"]

    def ready(self) -> bool:
        with contextlib.suppress(OSError, RuntimeError):
            self.counts()
            return True
        return False


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 and its key (Debian's openssl), readable by
    the relay's daemons."""
    cert, key = directory / "gateway-cert.pem", directory / "gateway-key.pem"
    key_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    name_args = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    out_args = ["-days", "1", "-keyout", str(key), "-out", str(cert)]
    argv = ["openssl", "req", "-x509", *key_args, *name_args, *out_args]
    subprocess.run(argv, check=True, capture_output=True)
    cert.chmod(0o644)
    return cert, key


@contextlib.contextmanager
def running_gateway(root: Path, port: int, tls: bool) -> Iterator[tuple[GatewayClient, int]]:
    """The gateway on ``port`` (HTTPS if ``tls``; its files in ``root``), stopped at the end;
    (client, its pid)."""
    from .procs import Daemon, running  # not needed when this file runs as the gateway

    argv = [sys.executable, str(Path(__file__).resolve()), str(port)]
    client = GatewayClient(port)
    if tls:
        cert, key = make_certificate(root)
        argv += [str(cert), str(key)]
        client = GatewayClient(port, str(cert))
    log = root / f"gateway-{port}.log"
    with running(Daemon(argv, log, cwd=root), client.ready) as daemon:
        yield client, daemon.pid


def tls_context(argv: list[str]) -> ssl.SSLContext | None:
    if not argv:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*argv)
    return context


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(int(sys.argv[1]), tls_context(sys.argv[2:])))
