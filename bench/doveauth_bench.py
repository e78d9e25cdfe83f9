"""Benchmark doveauth: dict lookups, account creation, and IMAP logins through real Dovecot.

Why: doveauth answers the passdb/userdb lookups of every login on a chatmail relay, and creates
the account on an address's first login. It must answer existing accounts fast, keep answering
them while a burst of sign-ups is being hashed, and cost Dovecot little compared with a static
passwd-file passdb, which is the limit of what Dovecot can do on this machine.

How: everything runs on loopback in one temporary directory (removed at the end), with
chatmail.ini's resource limits relaxed so that creation is never refused.

1. A ``doveauth`` from this venv, started as the vmail user like production, on a temporary
   socket; its log goes through a pipe, as under supervisord. 1000 accounts are pre-created by
   writing SHA512-CRYPT password files. Client processes speak Dovecot's dict protocol over raw
   sockets with ``selectors``; each connection has one request outstanding at a time, like a
   blocking Dovecot auth-worker. Existing accounts are looked up by ``passdb/<addr>``, the key
   Dovecot asks first; new ones by ``passdb/<password>"<addr>``, the key that creates.
   Figures: lookups/s of existing accounts and creations/s of new accounts over 1, 8 and 64
   connections, with latency percentiles, doveauth's CPU (event-loop
   process and hashing workers) and peak RSS (all its processes together).
2. Lookups at a fixed rate on a few connections, alone and next to sign-ups at full speed on
   other connections. Latency counts from each request's scheduled send time, so a stalled
   event loop counts in full (no coordinated omission); latency from the actual send is shown
   too (the difference is the client process's own delay on a busy machine).
3. The relay rendered by ``relay.render`` and started by ``relay.supervise.up`` (Dovecot,
   doveauth and lastlogin under supervisord), next to a second Dovecot from the same rendered
   dovecot.conf whose passdb/userdb is a passwd-file holding the same hashes (so both arms
   verify the same SHA512-CRYPT passwords). IMAP LOGIN+LOGOUT sessions from several client
   processes; the two arms alternate (ABBA...) so drift of the machine hits both alike.

The machine may be shared: CPU used by processes this benchmark did not start is measured in
every window and reported, since it lowers every figure.

Run as root with the project's venv::

    /usr/local/lib/chatmaild/venv-test/bin/python bench/doveauth_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import math
import multiprocessing
import os
import pwd
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from chatmaild import config as chatmail_config
from chatmaild.mailbox import ENFORCE_E2EE_FILE, PASSWORD_FILE
from doveauth.hashing import hash_password
from relay import supervise
from relay.render import Layout, Ports, RenderParams

DOMAIN = "bench.chatmail.test"
VMAIL = "vmail"
ACCOUNTS = 1000
CONCURRENCIES = (1, 8, 64)
CLIENT_PROCS = 4  # client processes driving one measurement (fewer if fewer connections)
BURST_LOOKUP_CONNS = 4
BURST_LOOKUP_RATE = 1000.0  # lookups/s, all lookup connections together
BURST_SIGNUP_CONNS = 16
IMAP_SESSIONS_PER_PROC = 8
HELLO = b"H3\t2\t0\t\tauth\n"  # what Dovecot 2.3.19's dict client says first
MP = multiprocessing.get_context("spawn")  # never fork: the parent runs threads
OTHER_LOAD_WARNING = 0.10  # share of one core used by others above which figures are suspect

GOAL_RATIO = 0.9
GOAL_BURST_P99_MS = 5.0
GOAL_LOOKUPS = 20_000


@dataclass(frozen=True)
class Durations:
    """Seconds of each measurement window (after ``warmup`` seconds that are not counted)."""

    lookup: float
    create: float
    burst: float
    imap_round: float  # one arm's share of one IMAP round
    imap_rounds: int
    warmup: float


FULL = Durations(lookup=10, create=8, burst=10, imap_round=5, imap_rounds=4, warmup=1.0)
QUICK = Durations(lookup=2, create=2, burst=3, imap_round=1.5, imap_rounds=2, warmup=0.5)


def say(text: str = "") -> None:
    print(text, flush=True)


# -- measuring CPU and memory over a window ------------------------------------------------------


class Probe:
    """Measures something over the counted part of a window: ``begin`` then ``end``."""

    def begin(self) -> None:
        pass

    def end(self, seconds: float) -> None:
        pass


class OtherLoad(Probe):
    """CPU used by processes this benchmark did not start (other jobs on a shared machine).

    A process is ours if one of its ancestors is a registered root (this process, the relay's
    supervisord, the baseline Dovecot); kernel threads are not counted. Processes that start
    and exit within a window are missed, so this is a lower bound.
    """

    def __init__(self) -> None:
        self.roots = {os.getpid()}
        self.shares: list[float] = []  # share of one core, per window
        self._before: dict[int, float] = {}

    def _cpu_of_others(self) -> dict[int, float]:
        procs = {p.pid: p.info for p in psutil.process_iter(["ppid", "cpu_times"])}
        others = {}
        for pid, info in procs.items():
            ancestor, hops = pid, 0
            while ancestor not in self.roots and ancestor > 2 and hops < 100:
                ancestor = procs.get(ancestor, {}).get("ppid", 0)
                hops += 1
            if ancestor in self.roots or ancestor == 2 or info["cpu_times"] is None:
                continue
            others[pid] = info["cpu_times"].user + info["cpu_times"].system
        return others

    def begin(self) -> None:
        self._before = self._cpu_of_others()

    def end(self, seconds: float) -> None:
        after = self._cpu_of_others()
        used = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        self.shares.append(max(0.0, used) / seconds)

    def since(self, mark: int) -> float:
        """The largest share of a window since ``mark`` (a former ``len(self.shares)``)."""
        return max(self.shares[mark:], default=0.0)


class MachineBusy(Probe):
    """Share of all CPUs busy over the window (1.0 = every core busy all the time)."""

    def __init__(self) -> None:
        self.share = math.nan
        self._idle = 0.0

    def begin(self) -> None:
        self._idle = psutil.cpu_times().idle

    def end(self, seconds: float) -> None:
        idle = psutil.cpu_times().idle - self._idle
        self.share = 1 - idle / (seconds * (os.cpu_count() or 1))


# -- the environment: temporary directory, chatmail.ini, accounts --------------------------------


@dataclass(frozen=True)
class Account:
    addr: str
    password: str
    hashed: str  # {SHA512-CRYPT}$6$...


@dataclass(frozen=True)
class Bench:
    root: Path
    ini: Path
    mailboxes: Path
    bin_dir: Path
    accounts: tuple[Account, ...]
    other: OtherLoad

    def credentials(self) -> tuple[tuple[str, str], ...]:
        return tuple((a.addr, a.password) for a in self.accounts)


def check_prerequisites(bin_dir: Path) -> None:
    """Exit with a message unless everything the benchmark starts is there."""
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (the daemons run as vmail, Dovecot needs root)")
    for tool in ("dovecot", "doveadm", "supervisord", "supervisorctl"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin"):
            problems.append(f"{tool} not found (Debian packages dovecot-core, supervisor)")
    try:
        pwd.getpwnam(VMAIL)
    except KeyError:
        problems.append(f"unix user {VMAIL!r} does not exist")
    if not (bin_dir / "doveauth").exists():
        problems.append(f"{bin_dir}/doveauth not found: run with the venv's python")
    if problems:
        raise SystemExit("doveauth_bench: " + "; ".join(problems))


def code_digest(base: Path | None = None) -> str:
    """sha256 of the daemons' code, installed (``base`` None) or in a checkout at ``base``."""
    digest = hashlib.sha256()
    for package in ("chatmaild", "doveauth", "relay"):
        if base is None:
            spec = importlib.util.find_spec(package)
            directory = Path(spec.origin).parent if spec and spec.origin else None
        else:
            directory = base / package
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*")):
            if path.suffix in (".py", ".j2"):
                digest.update(str(path.relative_to(directory.parent)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def temp_root() -> Iterator[Path]:
    """A temporary directory the vmail user can traverse, removed afterwards whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="doveauth-bench-"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_ini(root: Path, mailboxes: Path) -> Path:
    """chatmail.ini with resource limits that never refuse a creation."""
    ini = root / "chatmail.ini"
    ini.write_text(
        "[params]\n"
        f"mail_domain = {DOMAIN}\n"
        f"mailboxes_dir = {mailboxes}\n"
        f"vmail_user = {VMAIL}\n"
        f"nocreate_file = {root}/nocreate\n"
        "min_free_disk_space = 1M\n"
        "min_available_memory = 1M\n"
        "max_load_1m = 1000\n"
    )
    ini.chmod(0o644)
    return ini


def create_accounts(mailboxes: Path, count: int) -> tuple[Account, ...]:
    """Write ``count`` accounts as doveauth would (hashed by doveauth's own function)."""
    passwords = [secrets.token_urlsafe(12) for _ in range(count)]
    with MP.Pool(os.cpu_count() or 1) as pool:
        hashes = pool.map(hash_password, passwords, chunksize=50)
    vmail = pwd.getpwnam(VMAIL)
    accounts = []
    for i, (password, hashed) in enumerate(zip(passwords, hashes, strict=True)):
        addr = f"a{i:08d}@{DOMAIN}"
        udir = mailboxes / addr
        udir.mkdir(mode=0o700)
        (udir / PASSWORD_FILE).write_text(hashed)
        (udir / PASSWORD_FILE).chmod(0o600)
        (udir / ENFORCE_E2EE_FILE).write_text("")
        for path in (udir, udir / PASSWORD_FILE, udir / ENFORCE_E2EE_FILE):
            os.chown(path, vmail.pw_uid, vmail.pw_gid)
        accounts.append(Account(addr, password, hashed))
    return tuple(accounts)


def prepare_bench(root: Path) -> Bench:
    vmail = pwd.getpwnam(VMAIL)
    mailboxes = root / "mailboxes"
    mailboxes.mkdir(mode=0o700)
    os.chown(mailboxes, vmail.pw_uid, vmail.pw_gid)
    ini = write_ini(root, mailboxes)
    accounts = create_accounts(mailboxes, ACCOUNTS)
    return Bench(root, ini, mailboxes, Path(sys.executable).parent, accounts, OtherLoad())


def free_port(taken: Sequence[int] = ()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port


# -- doveauth: the process under test -----------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """doveauth's resources over one measurement window."""

    main_cpu: float  # share of one core used by the event-loop process (1.0 = 100 %)
    workers_cpu: float  # share of one core used by its children (hashing workers)
    peak_rss: int  # bytes, the daemon and all its children together


class Doveauth:
    """A doveauth started by us as the vmail user, its log copied from a pipe to a file."""

    def __init__(self, bench: Bench) -> None:
        sockets = bench.root / "sockets"
        sockets.mkdir(mode=0o755)
        vmail = pwd.getpwnam(VMAIL)
        os.chown(sockets, vmail.pw_uid, vmail.pw_gid)
        self.socket = sockets / "doveauth.socket"
        self.log_path = bench.root / "doveauth.log"
        self.popen = subprocess.Popen(
            [str(bench.bin_dir / "doveauth"), str(self.socket), str(bench.ini)],
            user=VMAIL,
            group=VMAIL,
            extra_groups=[],
            start_new_session=True,  # Ctrl-C reaches us only; we stop it
            cwd=bench.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.proc = psutil.Process(self.popen.pid)
        self._peak = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._copy_log, daemon=True),
            threading.Thread(target=self._sample_rss, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _copy_log(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "wb") as log:
            while chunk := self.popen.stdout.read1(65536):
                log.write(chunk)
                log.flush()

    def _sample_rss(self) -> None:
        while not self._stopping.wait(0.05):
            with contextlib.suppress(psutil.Error):
                rss = sum(p.memory_info().rss for p in self._tree())
                with self._lock:
                    self._peak = max(self._peak, rss)

    def _tree(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                time.sleep(0.2)  # let the log copier catch up
                log = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"doveauth exited with {self.popen.returncode}:\n{log}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(str(self.socket))
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"doveauth not listening after {timeout:.0f}s")
            time.sleep(0.05)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds so far of (the event-loop process, its children)."""
        main = sum(self.proc.cpu_times()[:2])
        children = 0.0
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                children += sum(child.cpu_times()[:2])
        return main, children

    def reset_peak(self) -> None:
        with self._lock:
            self._peak = 0

    def peak_rss(self) -> int:
        with self._lock:
            return self._peak

    def stop(self) -> None:
        """SIGTERM the daemon (by pid), then make sure none of its processes is left."""
        self._stopping.set()
        try:
            tree = self._tree()
        except psutil.Error:
            tree = []
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for child in tree[1:]:
            with contextlib.suppress(psutil.Error):
                child.kill()
        for thread in self._threads:
            thread.join(5)


class DoveauthUsage(Probe):
    def __init__(self, daemon: Doveauth) -> None:
        self.daemon = daemon
        self.usage = Usage(math.nan, math.nan, 0)
        self._cpu = (0.0, 0.0)

    def begin(self) -> None:
        self.daemon.reset_peak()
        self._cpu = self.daemon.cpu_seconds()

    def end(self, seconds: float) -> None:
        main, workers = self.daemon.cpu_seconds()
        self.usage = Usage(
            (main - self._cpu[0]) / seconds,
            (workers - self._cpu[1]) / seconds,
            self.daemon.peak_rss(),
        )


@contextlib.contextmanager
def running_doveauth(bench: Bench) -> Iterator[Doveauth]:
    daemon = Doveauth(bench)
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.stop()


# -- client processes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """When a measurement runs, in time.monotonic() seconds (the same clock in every process)."""

    start: float
    record_from: float
    end: float


@dataclass
class WorkerResult:
    ok: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: array = field(default_factory=lambda: array("d"))  # seconds
    service: array = field(default_factory=lambda: array("d"))  # from the actual send, if later
    cpu: float = 0.0  # CPU seconds of the client process

    def record(
        self,
        when: float,
        window: Window,
        ok: bool,
        latency: float,
        error: str,
        service: float | None = None,
    ) -> None:
        if not window.record_from <= when < window.end:
            return
        if ok:
            self.ok += 1
            self.latencies.append(latency)
            if service is not None:
                self.service.append(service)
        else:
            self.errors += 1
            self.first_error = self.first_error or error


@dataclass(frozen=True)
class LoadResult:
    """Merged results of the client processes of one kind of job over one window."""

    ok: int
    errors: int
    first_error: str
    latencies: list[float]  # sorted, seconds
    seconds: float
    client_cpu: float  # share of one core
    service: list[float] = field(default_factory=list)  # sorted; paced jobs only

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.latencies, q)


def percentile_ms(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted seconds, in milliseconds."""
    if not values:
        return math.nan
    return values[min(len(values), max(1, math.ceil(q * len(values)))) - 1] * 1000


def merge(results: Sequence[WorkerResult], window: Window) -> LoadResult:
    return LoadResult(
        ok=sum(r.ok for r in results),
        errors=sum(r.errors for r in results),
        first_error=next((r.first_error for r in results if r.first_error), ""),
        latencies=sorted(x for r in results for x in r.latencies),
        seconds=window.end - window.record_from,
        client_cpu=sum(r.cpu for r in results) / (window.end - window.start),
        service=sorted(x for r in results for x in r.service),
    )


def _worker_main(prepare: Callable, job: object, conn) -> None:
    """Run in a client process: prepare, say ready, wait for the window, run, send results."""
    try:
        run = prepare(job)  # e.g. connects; returns the function that runs the window
        conn.send("ready")
        window = conn.recv()
        cpu0 = time.process_time()
        result = run(window)
        result.cpu = time.process_time() - cpu0
        conn.send(result)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")


def run_clients(
    groups: Sequence[tuple[Callable, Sequence[object]]],
    warmup: float,
    seconds: float,
    probes: Sequence[Probe] = (),
) -> tuple[list[list[WorkerResult]], Window]:
    """Start one client process per job, run them all over one window, return their results.

    ``groups`` pairs a prepare function with its jobs; results come back grouped the same way.
    ``probes`` measure over the counted part of the window, from this process.
    """
    procs = []
    try:
        for prepare, jobs in groups:
            for job in jobs:
                parent, child = MP.Pipe()
                proc = MP.Process(target=_worker_main, args=(prepare, job, child), daemon=True)
                proc.start()
                procs.append((proc, parent))
        for _, parent in procs:
            _receive(parent, 60, expect="ready")
        start = time.monotonic() + 0.2
        window = Window(start, start + warmup, start + warmup + seconds)
        for _, parent in procs:
            parent.send(window)
        _probe_window(window, probes)
        flat = [_receive(parent, warmup + seconds + 60) for _, parent in procs]
    finally:
        for proc, _ in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    grouped, i = [], 0
    for _, jobs in groups:
        grouped.append(flat[i : i + len(jobs)])
        i += len(jobs)
    return grouped, window


def _probe_window(window: Window, probes: Sequence[Probe]) -> None:
    sleep_until(window.record_from)
    for probe in probes:
        probe.begin()
    sleep_until(window.end)
    for probe in probes:
        probe.end(window.end - window.record_from)


def _receive(conn, timeout: float, expect: str | None = None):
    if not conn.poll(timeout):
        raise RuntimeError("a client process did not answer in time")
    got = conn.recv()
    if isinstance(got, str) and got != expect:
        raise RuntimeError(f"client process failed: {got}")
    return got


def split_evenly(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# -- the dict client: like a Dovecot auth-worker, one request outstanding per connection ---------


@dataclass(frozen=True)
class DictJob:
    """One client process's connections. ``rate`` 0 means closed loop (as fast as answered)."""

    socket: str
    conns: int
    accounts: tuple[tuple[str, str], ...] = ()  # (addr, password): look these up, in turn
    create_prefix: str = ""  # else create new accounts named <prefix><counter>@DOMAIN
    rate: float = 0.0  # requests/s over all of this job's connections
    offset: int = 0  # where in ``accounts`` this job starts


def passdb_request(addr: str, password: str) -> bytes:
    # the creating passdb's key, passdb/%Ew"%Eu (nothing here needs %E escaping)
    return f'Lshared/passdb/{password}"{addr}\t{addr}\n'.encode()


def lookup_request(addr: str) -> bytes:
    # the key Dovecot asks for an existing account first: passdb/%Eu, without the password
    return f"Lshared/passdb/{addr}\t{addr}\n".encode()


def _request_source(job: DictJob) -> Callable[[], bytes]:
    if job.create_prefix:
        counter = iter(range(16**6))

        def create() -> bytes:
            n = next(counter)
            return passdb_request(f"{job.create_prefix}{n:06x}@{DOMAIN}", f"pw-{n:06x}-bench")

        return create
    requests = [lookup_request(addr) for addr, _password in job.accounts]
    position = iter(range(job.offset, sys.maxsize))
    return lambda: requests[next(position) % len(requests)]


class _DictConn:
    __slots__ = ("buf", "due", "sent_at", "sent_real", "sock")

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.sendall(HELLO)
        self.sock.setblocking(False)
        self.buf = b""
        self.due = 0.0  # when the next request is to be sent (paced mode)
        self.sent_at = 0.0  # when the outstanding request was due (paced) or sent
        self.sent_real = 0.0  # when it was sent


def prepare_dict_job(job: DictJob) -> Callable[[Window], WorkerResult]:
    conns = [_DictConn(job.socket) for _ in range(job.conns)]
    return lambda window: _drive_dict(job, conns, window)


def _drive_dict(job: DictJob, conns: list[_DictConn], window: Window) -> WorkerResult:
    result = WorkerResult()
    next_request = _request_source(job)
    paced = job.rate > 0
    interval = job.conns / job.rate if paced else 0.0
    # epoll rounds timeouts up to whole milliseconds; select() keeps microseconds, so a paced
    # request leaves on time rather than up to 1 ms late
    sel = selectors.SelectSelector() if paced else selectors.DefaultSelector()
    for i, conn in enumerate(conns):
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.due = window.start + i * interval / len(conns)
    idle = list(conns)  # connections without an outstanding request
    sleep_until(window.start)
    now = time.monotonic()
    while now < window.end:
        for conn in [c for c in idle if c.due <= now]:  # paced: due; closed loop: all at start
            idle.remove(conn)
            conn.sent_real = time.monotonic()
            conn.sent_at = conn.due if paced else conn.sent_real
            conn.sock.send(next_request())
        timeout = min((c.due for c in idle), default=window.end) - now
        for key, _ in sel.select(max(0.0, min(timeout, window.end - now))):
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise ConnectionError("doveauth closed a dict connection")
            line, newline, rest = (conn.buf + data).partition(b"\n")
            if not newline:
                conn.buf = line
                continue
            conn.buf = rest
            done = time.monotonic()
            ok = line.startswith(b"O")
            error = line[:80].decode(errors="replace")
            service = done - conn.sent_real if paced else None
            result.record(done, window, ok, done - conn.sent_at, error, service)
            if paced:
                conn.due += interval
                idle.append(conn)
            else:
                conn.sent_at = done
                conn.sock.send(next_request())
        now = time.monotonic()
    for conn in conns:
        conn.sock.close()
    return result


def lookup_jobs(socket_path: Path, bench: Bench, conns: int) -> list[DictJob]:
    accounts = bench.credentials()
    return [
        DictJob(str(socket_path), n, accounts=accounts, offset=i * 7919)
        for i, n in enumerate(split_evenly(conns, CLIENT_PROCS))
    ]


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_prefixes = iter(range(36**2))


def create_jobs(socket_path: Path, conns: int, procs: int = CLIENT_PROCS) -> list[DictJob]:
    """Jobs creating new accounts; every job gets a prefix no other job of this run has."""
    jobs = []
    for n in split_evenly(conns, procs):
        number = next(_prefixes)
        prefix = "c" + _BASE36[number // 36] + _BASE36[number % 36]
        jobs.append(DictJob(str(socket_path), n, create_prefix=prefix))
    return jobs


# -- figures 1-3: dict lookups and account creations against a standalone doveauth ---------------


@dataclass(frozen=True)
class DictRow:
    conns: int
    load: LoadResult
    usage: Usage


def measure_dict(
    daemon: Doveauth,
    bench: Bench,
    jobs: list[DictJob],
    seconds: float,
    warmup: float,
    side_jobs: Sequence[DictJob] = (),
) -> tuple[LoadResult, LoadResult | None, Usage]:
    """Run ``jobs`` (and ``side_jobs`` next to them); doveauth's usage over the window."""
    usage = DoveauthUsage(daemon)
    groups = [(prepare_dict_job, jobs)]
    if side_jobs:
        groups.append((prepare_dict_job, side_jobs))
    results, window = run_clients(groups, warmup, seconds, [usage, bench.other])
    time.sleep(0.5)  # let creations still in flight finish before the next measurement
    side = merge(results[1], window) if side_jobs else None
    return merge(results[0], window), side, usage.usage


def figure_lookups(daemon: Doveauth, bench: Bench, d: Durations) -> list[DictRow]:
    rows = []
    for conns in CONCURRENCIES:
        jobs = lookup_jobs(daemon.socket, bench, conns)
        load, _, usage = measure_dict(daemon, bench, jobs, d.lookup, d.warmup)
        rows.append(DictRow(conns, load, usage))
    return rows


def figure_creations(daemon: Doveauth, bench: Bench, d: Durations) -> list[DictRow]:
    rows = []
    for conns in CONCURRENCIES:
        jobs = create_jobs(daemon.socket, conns)
        load, _, usage = measure_dict(daemon, bench, jobs, d.create, d.warmup)
        rows.append(DictRow(conns, load, usage))
    return rows


@dataclass(frozen=True)
class BurstResult:
    quiet: LoadResult
    quiet_usage: Usage
    busy: LoadResult
    busy_usage: Usage
    signups: LoadResult


def figure_burst(daemon: Doveauth, bench: Bench, d: Durations) -> BurstResult:
    """Fixed-rate lookups alone, then next to sign-ups at full speed on other connections."""
    lookups = [
        DictJob(
            str(daemon.socket),
            BURST_LOOKUP_CONNS,
            accounts=bench.credentials(),
            rate=BURST_LOOKUP_RATE,
        )
    ]
    quiet, _, quiet_usage = measure_dict(daemon, bench, lookups, d.burst, d.warmup)
    signups = create_jobs(daemon.socket, BURST_SIGNUP_CONNS, procs=2)
    busy, signed_up, busy_usage = measure_dict(
        daemon, bench, lookups, d.burst, d.warmup, side_jobs=signups
    )
    assert signed_up is not None
    return BurstResult(quiet, quiet_usage, busy, busy_usage, signed_up)


# -- figure 4: IMAP logins through Dovecot, doveauth versus a static passwd-file ---------------


@dataclass(frozen=True)
class ImapJob:
    port: int
    accounts: tuple[tuple[str, str], ...]
    sessions: int
    offset: int


def prepare_imap_job(job: ImapJob) -> Callable[[Window], WorkerResult]:
    return lambda window: asyncio.run(_imap_sessions(job, window))


async def _imap_sessions(job: ImapJob, window: Window) -> WorkerResult:
    result = WorkerResult()
    sleep_until(window.start)

    async def session(first: int) -> None:
        n = first
        while time.monotonic() < window.end:
            addr, password = job.accounts[n % len(job.accounts)]
            n += job.sessions
            began = time.monotonic()
            try:
                async with asyncio.timeout(30):
                    problem = await imap_login_logout(job.port, addr, password)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            done = time.monotonic()
            result.record(done, window, not problem, done - began, problem)

    await asyncio.gather(*(session(job.offset + i) for i in range(job.sessions)))
    return result


async def imap_login_logout(port: int, addr: str, password: str) -> str:
    """Connect, LOGIN, LOGOUT; "" if all went well, else the unexpected line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        greeting = await reader.readline()
        if not greeting.startswith(b"* OK"):
            return greeting.decode(errors="replace").strip()
        writer.write(f'a LOGIN "{addr}" "{password}"\r\n'.encode())
        login = await _tagged_reply(reader, b"a ")
        if not login.startswith(b"a OK"):
            return login.decode(errors="replace").strip()
        writer.write(b"b LOGOUT\r\n")
        logout = await _tagged_reply(reader, b"b ")
        return "" if logout.startswith(b"b OK") else logout.decode(errors="replace").strip()
    finally:
        writer.close()


async def _tagged_reply(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line.startswith(tag):
            return line


def imap_jobs(port: int, bench: Bench) -> list[ImapJob]:
    return [
        ImapJob(port, bench.credentials(), IMAP_SESSIONS_PER_PROC, i * IMAP_SESSIONS_PER_PROC)
        for i in range(CLIENT_PROCS)
    ]


@dataclass
class ImapArm:
    name: str
    port: int
    results: list[LoadResult] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # share of all CPUs busy, per round

    @property
    def rate(self) -> float:
        return sum(r.ok for r in self.results) / sum(r.seconds for r in self.results)

    def merged(self) -> LoadResult:
        return LoadResult(
            ok=sum(r.ok for r in self.results),
            errors=sum(r.errors for r in self.results),
            first_error=next((r.first_error for r in self.results if r.first_error), ""),
            latencies=sorted(x for r in self.results for x in r.latencies),
            seconds=sum(r.seconds for r in self.results),
            client_cpu=sum(r.client_cpu for r in self.results) / len(self.results),
        )

    def measure(self, bench: Bench, seconds: float, warmup: float) -> None:
        busy = MachineBusy()
        results, window = run_clients(
            [(prepare_imap_job, imap_jobs(self.port, bench))], warmup, seconds, [busy, bench.other]
        )
        self.results.append(merge(results[0], window))
        self.busy.append(busy.share)


def baseline_dovecot_conf(rendered: str, bench: Bench, relay_port: int, port: int) -> str:
    """The relay's dovecot.conf with a passwd-file passdb/userdb, as its own instance."""
    home = bench.root / "baseline"
    passwd = home / "passwd"
    text = _replace_dict_blocks(
        rendered, "passdb", f"driver = passwd-file\n  args = scheme=SHA512-CRYPT {passwd}"
    )
    text = _replace_dict_blocks(text, "userdb", f"driver = passwd-file\n  args = {passwd}")
    for pattern, replacement in (
        (r"^base_dir = .*$", f"base_dir = {home}/run"),
        (r"^state_dir = .*$", f"state_dir = {home}/state"),
        (r"^instance_name = .*$", f"instance_name = chatmail-baseline-{port}"),
        (r"^log_path = .*$", f"log_path = {home}/dovecot.log"),
        (rf"^([ \t]*)port = {relay_port}$", rf"\g<1>port = {port}"),
    ):
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(f"rendered dovecot.conf changed shape: {pattern!r} not found once")
    return text


def _replace_dict_blocks(text: str, kind: str, body: str) -> str:
    """Replace every top-level ``kind { driver = dict ... }`` block by one block with ``body``."""
    blocks = [
        m
        for m in re.finditer(rf"^{kind} \{{\n.*?^\}}\n", text, flags=re.MULTILINE | re.DOTALL)
        if "driver = dict" in m.group()
    ]
    if not blocks:
        raise RuntimeError(f"rendered dovecot.conf has no {kind} with driver = dict")
    for m in reversed(blocks[1:]):
        text = text[: m.start()] + text[m.end() :]
    first = blocks[0]
    return text[: first.start()] + f"{kind} {{\n  {body}\n}}\n" + text[first.end() :]


def write_passwd_file(bench: Bench, path: Path) -> None:
    """user:hash:uid:gid::home:: lines holding the very hashes doveauth serves."""
    vmail = pwd.getpwnam(VMAIL)
    path.write_text(
        "".join(
            f"{a.addr}:{a.hashed}:{vmail.pw_uid}:{vmail.pw_gid}::{bench.mailboxes / a.addr}::\n"
            for a in bench.accounts
        )
    )
    shutil.chown(path, "root", "dovecot")  # read by Dovecot's auth process (user dovecot)
    path.chmod(0o640)


@contextlib.contextmanager
def running_relay(bench: Bench, port: int) -> Iterator[Layout]:
    """The relay as production runs it: rendered, then supervisord via relay.supervise.up."""
    config = chatmail_config.load(bench.ini)
    layout = Layout(bench.root / "relay")
    params = RenderParams(ports=Ports(imap=port), bin_dir=bench.bin_dir)
    try:
        supervise.up(config, layout, params, timeout=60)
        pid = supervise.supervisord_pid(layout)
        if pid is not None:
            bench.other.roots.add(pid)
        yield layout
    finally:
        supervise.down(layout)


@contextlib.contextmanager
def running_baseline(bench: Bench, layout: Layout, relay_port: int, port: int) -> Iterator[None]:
    """A second Dovecot (``dovecot -c``) from the relay's dovecot.conf with a passwd-file."""
    home = bench.root / "baseline"
    home.mkdir(mode=0o755)
    write_passwd_file(bench, home / "passwd")
    conf = home / "dovecot.conf"
    conf.write_text(baseline_dovecot_conf(layout.dovecot_conf.read_text(), bench, relay_port, port))
    subprocess.run(["dovecot", "-c", str(conf)], check=True, stdin=subprocess.DEVNULL)
    pid = _read_pid(home / "run" / "master.pid")
    if pid is not None:
        bench.other.roots.add(pid)
    try:
        wait_imap_greeting(port, 30)
        yield
    finally:
        subprocess.run(
            ["doveadm", "-c", str(conf), "stop"],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        _wait_gone(pid, 30)


def _read_pid(path: Path, timeout: float = 10) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.05)
    return None


def _wait_gone(pid: int | None, timeout: float) -> None:
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if psutil.pid_exists(pid):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


def wait_imap_greeting(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as s:
            if s.recv(100).startswith(b"* OK"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"no IMAP greeting on port {port} after {timeout:.0f}s")


def figure_imap(bench: Bench, d: Durations) -> tuple[ImapArm, ImapArm]:
    """Both arms run side by side; measurements alternate ABBA... between them."""
    relay_port = free_port()
    baseline_port = free_port([relay_port])
    with (
        running_relay(bench, relay_port) as layout,
        running_baseline(bench, layout, relay_port, baseline_port),
    ):
        doveauth = ImapArm("doveauth (dict passdb/userdb)", relay_port)
        static = ImapArm("static passwd-file passdb/userdb", baseline_port)
        for arm in (doveauth, static):  # warm up: start processes, fill caches
            run_clients([(prepare_imap_job, imap_jobs(arm.port, bench))], 0.0, d.warmup)
        for n in range(d.imap_rounds):
            for arm in (doveauth, static) if n % 2 == 0 else (static, doveauth):
                arm.measure(bench, d.imap_round, d.warmup)
    return doveauth, static


# -- report --------------------------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def ms(value: float) -> str:
    return f"{value:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    say("  " + "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        say("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def error_note(load: LoadResult, what: str) -> None:
    if load.errors:
        say(f"  ! {load.errors} {what} failed; first reply: {load.first_error!r}")


@contextlib.contextmanager
def noting_other_load(bench: Bench) -> Iterator[None]:
    """Say after a figure if other processes used much CPU while it was measured."""
    mark = len(bench.other.shares)
    yield
    share = bench.other.since(mark)
    if share > OTHER_LOAD_WARNING:
        say(f"  ! other processes on this machine used up to {pct(share)} of a core meanwhile")


def print_header(bench: Bench, quick: bool) -> None:
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout
    installed = code_digest()
    checkout = code_digest(Path(__file__).resolve().parent.parent)
    say("doveauth benchmark" + (" (--quick)" if quick else ""))
    say(f"  {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, Dovecot {dovecot.strip()}")
    say(f"  daemons from {bench.bin_dir}, code sha256 {installed}")
    if installed != checkout:
        say(f"  ! the checkout's code differs (sha256 {checkout}): reinstall to measure it")
    say(f"  {len(bench.accounts)} accounts pre-created in {bench.mailboxes}")


def print_dict_rows(title: str, unit: str, rows: list[DictRow], what: str) -> None:
    say()
    say(title)
    table(
        [
            "conns",
            unit,
            "p50 ms",
            "p99 ms",
            "doveauth CPU",
            "hash workers CPU",
            "client CPU",
            "peak RSS MiB",
        ],
        [
            [
                str(r.conns),
                f"{r.load.rate:,.0f}",
                ms(r.load.percentile_ms(0.50)),
                ms(r.load.percentile_ms(0.99)),
                pct(r.usage.main_cpu),
                pct(r.usage.workers_cpu),
                pct(r.load.client_cpu),
                mib(r.usage.peak_rss),
            ]
            for r in rows
        ],
    )
    for r in rows:
        error_note(r.load, what)


def print_lookups(rows: list[DictRow], d: Durations) -> None:
    title = f"Figure 1: existing-account passdb lookups, closed loop ({d.lookup:g}s each)"
    print_dict_rows(title, "lookups/s", rows, "lookups")


def print_creations(rows: list[DictRow], d: Durations) -> None:
    title = f"Figure 2: account creations, closed loop ({d.create:g}s each)"
    print_dict_rows(title, "creations/s", rows, "creations")


def print_burst(b: BurstResult, d: Durations) -> None:
    say()
    say(
        f"Figure 3: existing-account lookups at {BURST_LOOKUP_RATE:,.0f}/s on "
        f"{BURST_LOOKUP_CONNS} connections, alone and next to sign-ups at full speed "
        f"({d.burst:g}s each)"
    )
    scenarios = (
        ("lookups alone", b.quiet, b.quiet_usage, None),
        (f"+ sign-ups on {BURST_SIGNUP_CONNS} conns", b.busy, b.busy_usage, b.signups),
    )
    table(
        [
            "scenario",
            "lookups/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "p99 from send ms",
            "sign-ups/s",
            "doveauth CPU",
            "hash workers CPU",
        ],
        [
            [
                name,
                f"{load.rate:,.0f}",
                ms(load.percentile_ms(0.50)),
                ms(load.percentile_ms(0.99)),
                ms(load.percentile_ms(0.999)),
                ms(load.percentile_ms(1.0)),
                ms(percentile_ms(load.service, 0.99)),
                f"{signups.rate:,.0f}" if signups else "-",
                pct(usage.main_cpu),
                pct(usage.workers_cpu),
            ]
            for name, load, usage, signups in scenarios
        ],
    )
    say(
        "  latency counts from each lookup's scheduled send time; 'from send' counts from when\n"
        "  the client process actually sent it (the difference is the client's own delay)"
    )
    error_note(b.quiet, "lookups")
    error_note(b.busy, "lookups")
    error_note(b.signups, "sign-ups")


def print_imap(doveauth: ImapArm, static: ImapArm, d: Durations) -> None:
    say()
    say(
        f"Figure 4: IMAP LOGIN+LOGOUT through Dovecot, {CLIENT_PROCS}x{IMAP_SESSIONS_PER_PROC} "
        f"concurrent sessions, {d.imap_rounds} alternating rounds of {d.imap_round:g}s per arm"
    )
    rows = []
    for arm in (doveauth, static):
        load = arm.merged()
        rows.append(
            [
                arm.name,
                f"{arm.rate:,.0f}",
                ms(load.percentile_ms(0.5)),
                ms(load.percentile_ms(0.99)),
                str(load.errors),
                pct(sum(arm.busy) / len(arm.busy)),
                pct(load.client_cpu),
                " ".join(f"{r.rate:.0f}" for r in arm.results),
            ]
        )
    table(
        [
            "arm",
            "logins/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "all CPUs busy",
            "client CPU",
            "logins/s per round",
        ],
        rows,
    )
    for arm in (doveauth, static):
        error_note(arm.merged(), f"{arm.name} logins")
    say(f"  ratio doveauth/static: {doveauth.rate / static.rate:.3f}")


def print_goals(lookups: list[DictRow], burst: BurstResult, imap: tuple[ImapArm, ImapArm]):
    ratio = imap[0].rate / imap[1].rate
    p99 = burst.busy.percentile_ms(0.99)
    best = max(lookups, key=lambda r: r.load.rate)
    goals = [
        (f"IMAP login ratio doveauth/static >= {GOAL_RATIO}", f"{ratio:.3f}", ratio >= GOAL_RATIO),
        (
            f"lookup p99 during sign-up burst < {GOAL_BURST_P99_MS:g} ms",
            f"{p99:.2f} ms ({percentile_ms(burst.busy.service, 0.99):.2f} from send)",
            p99 < GOAL_BURST_P99_MS and not burst.busy.errors,
        ),
        (
            f"existing-account lookups >= {GOAL_LOOKUPS:,}/s",
            f"{best.load.rate:,.0f}/s ({best.conns} conns)",
            best.load.rate >= GOAL_LOOKUPS,
        ),
    ]
    say()
    say("Goals")
    table(["goal", "measured", "result"], [[g, m, "PASS" if ok else "MISS"] for g, m, ok in goals])


def print_other_load(bench: Bench) -> None:
    shares = bench.other.shares
    say()
    say(
        f"Other processes on this machine used {pct(sum(shares) / len(shares))} of a core on "
        f"average, {pct(max(shares))} at most, over the {len(shares)} measurement windows"
    )


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    d = QUICK if args.quick else FULL
    check_prerequisites(Path(sys.executable).parent)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    with temp_root() as root:
        bench = prepare_bench(root)
        print_header(bench, args.quick)
        with running_doveauth(bench) as daemon:
            with noting_other_load(bench):
                lookups = figure_lookups(daemon, bench, d)
                print_lookups(lookups, d)
            with noting_other_load(bench):
                print_creations(figure_creations(daemon, bench, d), d)
            with noting_other_load(bench):
                burst = figure_burst(daemon, bench, d)
                print_burst(burst, d)
        with noting_other_load(bench):
            imap = figure_imap(bench, d)
            print_imap(*imap, d)
        print_goals(lookups, burst, imap)
        print_other_load(bench)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
