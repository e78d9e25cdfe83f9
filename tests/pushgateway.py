"""A stand-in push gateway for tests: HTTPS on 127.0.0.1 with a certificate of its own CA.

The relay's notifier must trust it as it trusts the real gateway: by verifying the certificate.
``ca_file`` is the certificate to hand to the notifier (``SSL_CERT_FILE`` in its environment,
which OpenSSL reads instead of the system's CA store). The gateway records each POST body
with the time it arrived and answers 410 for tokens in ``dead``, else 200. ``stop()`` closes
the port (connections are refused, as when a gateway is down); ``start()`` opens it again.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from helpers_env import free_port, require_binary


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by Debian's openssl."""
    require_binary("openssl")
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    args = ["req", "-x509", "-nodes", "-days", "2", "-newkey", "ec"]
    args += ["-pkeyopt", "ec_paramgen_curve:P-256", "-subj", "/CN=push gateway stand-in"]
    args += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", *args], check=True, capture_output=True)
    return cert, key


class Gateway:
    """An HTTPS push gateway on a fixed loopback port; see the module's doc."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="push-gateway-"))
        self.dir.chmod(0o755)  # chatmail-metadata (vmail) reads ca_file
        self.ca_file, key = make_certificate(self.dir)
        self.ca_file.chmod(0o644)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.ca_file, key)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}/notify"
        self.received: list[str] = []
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), token)
        self.dead: set[str] = set()
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()  # open ones: stop() ends them too
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # kept-alive connections, as a real gateway has

            def setup(self) -> None:
                super().setup()
                with gateway.lock:
                    gateway.connections.add(self.connection)

            def finish(self) -> None:
                with gateway.lock:
                    gateway.connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with gateway.lock:
                    gateway.received.append(body)
                    gateway.arrivals.append((time.monotonic(), body))
                self.send_response(410 if body in gateway.dead else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler(), False)
        server.daemon_threads = True
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        server.socket = self.context.wrap_socket(server.socket, server_side=True)
        self.server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Down: the port closed and kept-alive connections ended."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def tokens(self) -> list[str]:
        with self.lock:
            return list(self.received)

    def arrived(self, token: str) -> float | None:
        """When ``token`` first arrived (time.monotonic()), or None."""
        with self.lock:
            return next((when for when, body in self.arrivals if body == token), None)

    def close(self) -> None:
        self.stop()
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()
