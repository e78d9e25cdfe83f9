"""filtermail's reinjection client against a small SMTP listener that records each session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from filtermail.reinject import Reinjector, transaction


class Listener:
    """Postfix's reinjection listener, reduced to what the client sends: 250 to everything."""

    def __init__(self) -> None:
        self.sessions: list[list[bytes]] = []  # the commands of each connection
        self.closed = 0  # connections the client ended

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands: list[bytes] = []
        self.sessions.append(commands)
        writer.write(b"220 listener\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line.split()[0].upper()
            commands.append(verb)
            if verb == b"EHLO":
                writer.write(b"250-listener\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                in_data = True
                writer.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        self.closed += 1
        writer.close()


async def pieces() -> AsyncIterator[bytes]:
    yield b"Subject: x\r\n\r\nhello\r\n"


async def send_with(idle_timeout: float, pause: float) -> Listener:
    """Two messages ``pause`` seconds apart, then twice the idle timeout of quiet."""
    listener = Listener()
    server = await asyncio.start_server(listener.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reinjector = Reinjector("127.0.0.1", port, idle_timeout=idle_timeout)
    tx = transaction("a@example.org", ["b@example.org"], [])
    try:
        for n in range(2):
            assert (await reinjector.send(tx, pieces())).code == 250
            await asyncio.sleep(pause if n == 0 else 2 * idle_timeout)
    finally:
        await reinjector.close()
        server.close()
        await server.wait_closed()
    return listener


def test_a_kept_connection_carries_the_next_message_and_is_quit_when_idle():
    listener = asyncio.run(send_with(idle_timeout=0.3, pause=0.05))
    message = [b"MAIL", b"RCPT", b"DATA"]
    assert listener.sessions == [[b"EHLO", *message, *message, b"QUIT"]]
    assert listener.closed == 1


def test_an_idle_connection_is_quit_before_the_next_message_needs_a_new_one():
    listener = asyncio.run(send_with(idle_timeout=0.1, pause=0.4))
    assert listener.sessions == [[b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]] * 2
    assert listener.closed == 2
