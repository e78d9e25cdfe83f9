"""Quick throughput and profile of filtermail alone: client -> filtermail -> sink, on loopback.

Not the official benchmark (that is ``filtermail_bench.py``): a tool for finding where the CPU
goes. One filtermail process (``python -m filtermail INI outgoing``) from this checkout, a sink
process playing Postfix's reinjection listener (a minimal asyncio SMTP server answering 250 at
once, PIPELINING offered), and a client process opening one new connection per message as
Postfix's before-queue proxy does (EHLO, MAIL, RCPT, DATA, QUIT; no pipelining), with
``--clients`` connections at a time. Prints messages a second, filtermail's CPU per message and
its RSS (idle, and the peak while loaded).

    python bench/filtermail_profile.py [--size 4096] [--clients 1,16,64] [--seconds 5]
        [--profile FILE]  # run filtermail under cProfile, write its stats to FILE

No root needed; everything runs in a temporary directory on free loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SENDER = "alice@example.org"
RCPT = "bob@example.net"  # outgoing: another relay's user
LOCAL_RCPT = "bob@example.org"  # incoming: an account of this relay
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(size: int) -> bytes:
    """An RFC 3156 message of about ``size`` bytes (PKESK + SEIPD, 64-column armor, CRC line)."""
    sys.path.insert(0, str(REPO))
    from filtermail.crc24 import crc24

    def packet(tag: int, body: bytes) -> bytes:
        return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body

    data = packet(1, b"\x03" + os.urandom(90))
    data += packet(18, b"\x01" + os.urandom(max(100, (size - 900) * 48 // 65)))
    b64 = base64.b64encode(data).decode()
    crc = base64.b64encode(crc24(data).to_bytes(3, "big")).decode()
    armor = "\r\n".join(
        [
            "-----BEGIN PGP MESSAGE-----",
            "",
            *(b64[i : i + 64] for i in range(0, len(b64), 64)),
            "=" + crc,
            "-----END PGP MESSAGE-----",
            "",
        ]
    )
    return (
        "Received: from client (unknown [203.0.113.7]) by relay with ESMTPSA id 4AB\r\n"
        f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: [...]\r\n"
        "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m1@localhost>\r\n"
        "Chat-Version: 1.0\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        ' boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
        '--b1\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        f"{armor}--b1--\r\n"
    ).encode()


# --- the sink: Postfix's reinjection listener, as cheap as possible -----------------------


class SinkProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        self.in_data = False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data):
        buf = self.buf + data
        out = []
        while True:
            if self.in_data:
                end = buf.find(b"\r\n.\r\n")
                if end < 0:
                    buf = buf[-4:]
                    break
                buf = buf[end + 5 :]
                self.in_data = False
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            nl = buf.find(b"\n")
            if nl < 0:
                break
            verb = buf[:4].upper()
            buf = buf[nl + 1 :]
            if verb == b"EHLO":
                out.append(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
            elif verb == b"DATA":
                out.append(b"354 go\r\n")
                buf = b"\r\n" + buf  # the data's first line may be the end line
                self.in_data = True
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 OK\r\n")
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))


def run_sink(port: int, ready) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    async def main():
        server = await asyncio.get_running_loop().create_server(
            SinkProtocol, "127.0.0.1", port, backlog=1024
        )
        ready.set()
        await server.serve_forever()

    asyncio.run(main())


# --- the client: Postfix's before-queue proxy, one connection per message ------------------


class ClientProtocol(asyncio.Protocol):
    """EHLO, MAIL, RCPT, DATA, the message, QUIT: each after the previous reply."""

    def __init__(self, payload: bytes, rcpt: str, done: asyncio.Future):
        self.steps = [
            b"EHLO postfix\r\n",
            f"MAIL FROM:<{SENDER}> SIZE={len(payload)}\r\n".encode(),
            f"RCPT TO:<{rcpt}>\r\n".encode(),
            b"DATA\r\n",
            payload + b".\r\n",
            b"QUIT\r\n",
        ]
        self.codes = []
        self.done = done
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return
            line, self.buf = self.buf[: nl + 1], self.buf[nl + 1 :]
            if line[3:4] == b"-":
                continue
            self.codes.append(line[:3])
            if self.codes[-1][:1] not in (b"2", b"3"):
                self.finish(f"refused: {line!r}")
                return
            if not self.steps:
                self.finish(None)
                return
            self.transport.write(self.steps.pop(0))

    def finish(self, error):
        if not self.done.done():
            self.done.set_result(error)
        self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(f"lost after {self.codes}")


async def _one(loop, port: int, payload: bytes, rcpt: str) -> str | None:
    done = loop.create_future()
    await loop.create_connection(lambda: ClientProtocol(payload, rcpt, done), "127.0.0.1", port)
    return await done


def run_clients(
    port: int, payload: bytes, rcpt: str, clients: int, seconds: float, results
) -> None:
    async def main():
        loop = asyncio.get_running_loop()
        counts = {"ok": 0, "errors": 0, "first_error": None}
        stop_at = loop.time() + seconds

        async def worker():
            while loop.time() < stop_at:
                try:
                    error = await _one(loop, port, payload, rcpt)
                except OSError as exc:
                    error = str(exc)
                if error is None:
                    counts["ok"] += 1
                else:
                    counts["errors"] += 1
                    counts["first_error"] = counts["first_error"] or error

        start = loop.time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        counts["elapsed"] = loop.time() - start
        results.put(counts)

    asyncio.run(main())


# --- filtermail ------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def start_filtermail(
    tmp: Path, port: int, reinject: int, profile: str | None, uvloop: bool, direction: str
):
    (tmp / "mail" / LOCAL_RCPT).mkdir(parents=True)
    (tmp / "mail" / LOCAL_RCPT / "password").write_text("{PLAIN}x")
    (tmp / "mail" / LOCAL_RCPT / "enforceE2EEincoming").write_text("")
    ini = tmp / "chatmail.ini"
    ini.write_text(
        "[params]\nmail_domain = example.org\n"
        f"mailboxes_dir = {tmp / 'mail'}\nnocreate_file = {tmp / 'nocreate'}\n"
        "max_user_send_per_minute = 10000000\nmax_user_send_burst_size = 10000000\n"
        "dkim_sign = false\ndkim_verify = false\n"
    )
    args = [sys.executable]
    if profile:
        args += ["-m", "cProfile", "-o", profile]
    if uvloop:  # the same entry point, on uvloop's event loop (must be installed)
        code = "import runpy, uvloop; uvloop.install(); runpy.run_module('filtermail', "
        code += "run_name='__main__')"
        args += ["-c", code, str(ini), direction, "--port", str(port)]
    else:
        args += ["-m", "filtermail", str(ini), direction, "--port", str(port)]
    args += ["--reinject-port", str(reinject)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(tmp / "filtermail.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((tmp / "filtermail.log").read_text())
        time.sleep(0.05)
    return proc


def measure(pid: int, port: int, payload: bytes, rcpt: str, clients: int, seconds: float) -> dict:
    ctx = get_context("spawn")
    results = ctx.Queue()
    client = ctx.Process(target=run_clients, args=(port, payload, rcpt, clients, seconds, results))
    user0, sys0 = cpu_times(pid)
    faults0 = minor_faults(pid)
    client.start()
    peak = 0.0
    while client.is_alive():
        peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
        if not results.empty():
            break
    counts = results.get(timeout=60)
    client.join()
    user, system = cpu_times(pid)
    counts["user"], counts["sys"] = user - user0, system - sys0
    counts["cpu"] = counts["user"] + counts["sys"]
    counts["faults"] = minor_faults(pid) - faults0
    counts["peak"] = peak
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[4096, 1 << 20])
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profile", help="write filtermail's cProfile stats here")
    parser.add_argument("--direction", choices=("outgoing", "incoming"), default="outgoing")
    parser.add_argument("--uvloop", action="store_true", help="run filtermail on uvloop")
    parser.add_argument("--pyspy", help="sample filtermail with py-spy: collapsed stacks here")
    args = parser.parse_args()
    ctx = get_context("spawn")
    sink_port, port = free_port(), free_port()
    ready = ctx.Event()
    sink = ctx.Process(target=run_sink, args=(sink_port, ready), daemon=True)
    sink.start()
    ready.wait(10)
    with tempfile.TemporaryDirectory(prefix="fm-profile-") as tmp:
        proc = start_filtermail(
            Path(tmp), port, sink_port, args.profile, args.uvloop, args.direction
        )
        rcpt = RCPT if args.direction == "outgoing" else LOCAL_RCPT
        try:
            time.sleep(0.5)
            print(f"filtermail idle RSS {rss_mb(proc.pid):.1f} MB")
            for size in args.size:
                payload = message(size)
                # warm-up: imports, the first reinjection connections
                measure(proc.pid, port, payload, rcpt, 4, 0.5)
                for clients in map(int, args.clients.split(",")):
                    spy = None
                    if args.pyspy:
                        spy = subprocess.Popen(
                            [
                                str(Path(sys.executable).with_name("py-spy")),
                                "record",
                                "-r",
                                "250",
                                "-f",
                                "raw",
                                "-o",
                                f"{args.pyspy}.{size}.{clients}",
                                "-p",
                                str(proc.pid),
                                "-d",
                                str(int(args.seconds)),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    c = measure(proc.pid, port, payload, rcpt, clients, args.seconds)
                    if spy is not None:
                        spy.wait()
                    rate = c["ok"] / c["elapsed"]
                    per = 1000 * c["cpu"] / max(1, c["ok"])
                    sys_share = 100 * c["sys"] / max(c["cpu"], 1e-9)
                    err = f" errors {c['errors']} ({c['first_error']})" if c["errors"] else ""
                    print(
                        f"{len(payload):>8} B x {clients:>2} clients: {rate:7.1f} msg/s, "
                        f"filtermail {per:.3f} ms CPU/msg ({sys_share:.0f}% sys, "
                        f"{c['faults'] / max(1, c['ok']):.0f} faults), "
                        f"{100 * c['cpu'] / c['elapsed']:.0f}%"
                        f" CPU, peak RSS {c['peak']:.1f} MB{err}"
                    )
            time.sleep(3.0)
            print(f"filtermail RSS 3 s after the load {rss_mb(proc.pid):.1f} MB")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            sink.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
