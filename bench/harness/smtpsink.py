"""A fast SMTP sink on loopback, playing Postfix's reinjection listener: 250 to all, data dropped.

Run as its own process (``python smtpsink.py PORT``; ``start_sink`` does that): it offers
PIPELINING as Postfix does, answers every command at once, discards the data and counts the
messages whose end it saw. On SIGTERM it prints ``received N messages`` and exits, so a
benchmark can check that everything the filter accepted arrived. It imports nothing but the
standard library, so it runs from this file alone.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

EHLO = b"250-sink\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
END = b"\r\n.\r\n"
RECEIVED = re.compile(r"received (\d+) messages")


class Sink(asyncio.Protocol):
    received = 0  # over all connections

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""  # an incomplete command line
        self.in_data = False
        self.tail = b""  # the last bytes of data seen, to find an end line split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        while data:
            data = self._data(data) if self.in_data else self._commands(data)

    def _data(self, data: bytes) -> bytes:
        """Drop data up to the end line; what follows it (pipelined commands) is returned."""
        joined = self.tail + data
        end = joined.find(END)
        if end < 0:
            self.tail = joined[-(len(END) - 1) :]
            return b""
        self.in_data = False
        Sink.received += 1
        assert self.transport is not None
        self.transport.write(b"250 2.0.0 Ok: queued\r\n")
        return joined[end + len(END) :]

    def _commands(self, data: bytes) -> bytes:
        """Answer the complete command lines; after DATA, the rest is data and returned."""
        assert self.transport is not None
        self.buffer += data
        replies = []
        while not self.in_data:
            line, newline, rest = self.buffer.partition(b"\n")
            if not newline:
                break
            self.buffer = rest
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                replies.append(EHLO)
            elif verb == b"DATA":
                replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data, self.tail = True, b"\r\n"  # the data may end at once
            elif verb == b"QUIT":
                self.transport.write(b"".join(replies) + b"221 2.0.0 Bye\r\n")
                self.transport.close()
                return b""
            else:
                replies.append(b"250 2.0.0 Ok\r\n")
        if replies:
            self.transport.write(b"".join(replies))
        if not self.in_data:
            return b""
        rest, self.buffer = self.buffer, b""
        return rest


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(Sink, "127.0.0.1", port, reuse_address=True, backlog=512)
    await stop.wait()
    server.close()
    print(f"received {Sink.received} messages", flush=True)


def argv(port: int) -> list[str]:
    """The command line that runs the sink on ``port`` with this Python."""
    return [sys.executable, str(Path(__file__).resolve()), str(port)]


def received(log: str) -> int | None:
    """The count the sink printed when it stopped, from its log; None if it did not."""
    found = RECEIVED.findall(log)
    return int(found[-1]) if found else None


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
