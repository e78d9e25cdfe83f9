"""filtermail.smtpserver over a loopback socket: the conversation rules a handler never sees."""

from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from helpers_env import free_port

from filtermail.smtpserver import FilterSMTP, ServerConfig


class Refusing:
    """A handler that takes every sender and refuses every recipient."""

    async def handle_MAIL(self, envelope, address, options):
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, envelope, address, options):
        return "550 5.1.1 no"

    async def handle_DATA(self, envelope):
        raise AssertionError("no DATA without a recipient")

    async def handle_exception(self, error):
        return "451 4.3.0 Internal error, try again later"


@contextmanager
def server(tmp_path: Path, timeout: float = 30.0):
    """A FilterSMTP server on a free port, its loop in a thread; yields the port."""
    config = ServerConfig(Refusing(), tmp_path, 1000, "relay.example", timeout=timeout)
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def main(stop: asyncio.Event) -> None:
        srv = await loop.create_server(lambda: FilterSMTP(config), "127.0.0.1", port)
        started.set()
        await stop.wait()
        srv.close()

    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(stop),))
    thread.start()
    started.wait(10)
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def converse(port: int, lines: list[bytes]) -> list[bytes]:
    """Send each line after the previous reply (and the greeting); the reply lines in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        replies = [reader.readline()]
        for line in lines:
            sock.sendall(line + b"\r\n")
            while True:
                reply = reader.readline()
                replies.append(reply)
                if reply[3:4] != b"-":
                    break
        replies.append(reader.read())  # b"" once the server has closed the connection
        return replies


def test_a_conversation_gets_aiosmtpds_replies(tmp_path):
    with server(tmp_path) as port:
        replies = converse(port, [b"MAIL FROM:<a@b.org>", b"HELO client", b"NOOP", b"QUIT"])
    assert replies == [
        b"220 relay.example filtermail\r\n",
        b"503 Error: send HELO first\r\n",
        b"250 relay.example\r\n",
        b"250 OK\r\n",
        b"221 Bye\r\n",
        b"",
    ]


def test_ehlo_offers_what_a_before_queue_filter_takes(tmp_path):
    with server(tmp_path) as port:
        replies = converse(port, [b"EHLO client", b"QUIT"])
    assert replies[1:6] == [
        b"250-relay.example\r\n",
        b"250-SIZE 1000\r\n",
        b"250-8BITMIME\r\n",
        b"250-SMTPUTF8\r\n",
        b"250 HELP\r\n",
    ]


def test_the_fifth_unknown_command_ends_the_connection(tmp_path):
    with server(tmp_path) as port:
        replies = converse(port, [b"EHLO client", b"RCPT TO:<x@y.org>"] + [b"XYZZY"] * 5)
    assert replies[6] == b"503 5.5.1 Error: need MAIL command\r\n"  # after EHLO's 5 lines
    assert replies[7:11] == [b'500 Error: command "XYZZY" not recognized\r\n'] * 4
    assert replies[11:] == [b"502 5.5.1 Too many unrecognized commands, goodbye.\r\n", b""]


def test_data_needs_an_accepted_recipient(tmp_path):
    with server(tmp_path) as port:
        replies = converse(
            port, [b"EHLO client", b"MAIL FROM:<a@b.org>", b"RCPT TO:<c@d.org>", b"DATA", b"QUIT"]
        )
    assert replies[-4:-2] == [b"550 5.1.1 no\r\n", b"503 5.5.1 Error: need RCPT command\r\n"]


def test_an_idle_connection_is_closed(tmp_path):
    with server(tmp_path, timeout=0.2) as port, socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        reader = s.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        s.sendall(b"NOOP\r\n")
        assert reader.readline() == b"250 OK\r\n"
        assert reader.read() == b""  # closed after the timeout, without a reply
