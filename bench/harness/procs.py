"""Processes a benchmark starts: start, readiness, stop, and their memory and CPU.

A daemon may run as one process, with worker processes, or with threads: everything here counts
the whole process tree under a root pid, whatever it holds at the moment of measuring.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from pathlib import Path

import psutil


class Daemon:
    """A process started by us (as ``user`` if given), its output copied from a pipe to a file.

    Like under supervisord: its own session (Ctrl-C reaches only us; we stop it), stdin from
    /dev/null, stdout and stderr into one pipe.
    """

    def __init__(
        self, argv: Sequence[str], log_path: Path, *, user: str | None = None, cwd: Path
    ) -> None:
        self.name = Path(argv[0]).name
        self.log_path = log_path
        self.popen = subprocess.Popen(
            list(argv),
            user=user,
            group=user,
            extra_groups=[] if user else None,
            start_new_session=True,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.popen.pid
        self._copier = threading.Thread(target=self._copy_log, daemon=True)
        self._copier.start()

    def _copy_log(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "wb") as log:
            while chunk := self.popen.stdout.read1(65536):
                log.write(chunk)
                log.flush()

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 30) -> None:
        """Wait until ``ready()``; raise with the end of its log if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                time.sleep(0.2)  # let the log copier catch up
                log = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the daemon (by pid), then make sure none of its processes is left."""
        descendants = tree(self.pid)[1:]
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for child in descendants:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self._copier.join(5)


@contextlib.contextmanager
def running(daemon: Daemon, ready: Callable[[], bool], timeout: float = 30) -> Iterator[Daemon]:
    """``daemon`` once ready; stopped at the end whatever happens."""
    try:
        daemon.wait_ready(ready, timeout)
        yield daemon
    finally:
        daemon.stop()


def unix_socket_accepts(path: Path) -> Callable[[], bool]:
    def ready() -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            return True
        return False

    return ready


def tcp_greets(port: int, greeting: bytes, host: str = "127.0.0.1") -> Callable[[], bool]:
    def ready() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 2) as s:
            return s.recv(len(greeting)).startswith(greeting)
        return False

    return ready


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {timeout:.0f}s")
        time.sleep(0.1)


def read_pid(path: Path, timeout: float = 10) -> int | None:
    """The pid in a pidfile, waiting for it to appear; None if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        time.sleep(0.05)
    return None


def wait_gone(pid: int | None, timeout: float) -> None:
    """Wait until ``pid`` has exited; SIGKILL it if it has not after ``timeout`` seconds."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if psutil.pid_exists(pid):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


# -- process trees -------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants now; empty if it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds so far (user + system) of (the process itself, its descendants now)."""
    procs = tree(pid)
    if not procs:
        return 0.0, 0.0
    times = []
    for proc in procs:
        try:
            times.append(sum(proc.cpu_times()[:2]))
        except psutil.Error:
            times.append(0.0)
    return times[0], sum(times[1:])


def under(pid: int, roots: set[int], ppids: Mapping[int, int]) -> int | None:
    """The first of ``roots`` among ``pid`` and its ancestors, or None."""
    hops = 0
    while pid not in roots and pid > 2 and hops < 100:
        pid = ppids.get(pid, 0)
        hops += 1
    return pid if pid in roots else None


def members_by_tree(
    roots: Mapping[str, int], alone: Set[str] = frozenset()
) -> dict[str, list[int]]:
    """The pids of the tree under each named root now (trees may nest), from one pass.

    A name in ``alone`` stands for its root process only, without descendants.
    """
    ppids = {p.pid: p.info["ppid"] for p in psutil.process_iter(["ppid"])}
    return {
        name: [root] if name in alone else [pid for pid in ppids if under(pid, {root}, ppids)]
        for name, root in roots.items()
    }


def names_by_tree(roots: Mapping[str, int], alone: Set[str] = frozenset()) -> dict[str, Counter]:
    """How many processes of each name (as ``ps`` shows it) each tree holds now."""
    names = {}
    for group, pids in members_by_tree(roots, alone).items():
        names[group] = Counter()
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                names[group][psutil.Process(pid).name()] += 1
    return names


def _memory_by_tree(
    roots: Mapping[str, int], alone: Set[str], measure: Callable[[psutil.Process], int]
) -> dict[str, tuple[int, int]]:
    memo: dict[int, int | None] = {}
    totals = {}
    for name, pids in members_by_tree(roots, alone).items():
        for pid in pids:
            if pid not in memo:
                memo[pid] = None
                with contextlib.suppress(psutil.Error):
                    memo[pid] = measure(psutil.Process(pid))
        counted = [memo[pid] for pid in pids if memo[pid] is not None]
        totals[name] = (sum(counted), len(counted))
    return totals


def rss_by_tree(
    roots: Mapping[str, int], alone: Set[str] = frozenset()
) -> dict[str, tuple[int, int]]:
    """(RSS bytes summed, process count) of the tree under each named root.

    A process counts in every tree it belongs to (a whole relay, and a daemon in it). RSS
    counts pages shared between processes (libraries, Dovecot's shared memory) in each one.
    """
    return _memory_by_tree(roots, alone, lambda proc: proc.memory_info().rss)


def pss_by_tree(
    roots: Mapping[str, int], alone: Set[str] = frozenset()
) -> dict[str, tuple[int, int]]:
    """Like ``rss_by_tree`` with PSS: a page shared by n processes counts 1/n in each.

    Summed over processes, PSS is the memory they use together; slower to read than RSS.
    """
    return _memory_by_tree(roots, alone, lambda proc: proc.memory_full_info().pss)


class RssSampler:
    """Samples the RSS of named process trees every ``interval`` seconds in a thread.

    ``roots`` maps a name to the pid at the top of a tree (just that process for a name in
    ``alone``). ``current`` is the latest sample, ``peak`` the largest since the start or
    ``reset_peaks``.
    """

    def __init__(
        self, roots: Mapping[str, int], alone: Set[str] = frozenset(), interval: float = 0.05
    ) -> None:
        self.roots = dict(roots)
        self.alone = frozenset(alone)
        self.interval = interval
        self._current: dict[str, tuple[int, int]] = {}
        self._peak = dict.fromkeys(self.roots, 0)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.sample()

    def sample(self) -> dict[str, tuple[int, int]]:
        """Take a sample now; (RSS bytes, process count) of each tree."""
        sample = rss_by_tree(self.roots, self.alone)
        with self._lock:
            self._current = sample
            for name, (rss, _count) in sample.items():
                self._peak[name] = max(self._peak[name], rss)
        return sample

    def reset_peaks(self) -> None:
        with self._lock:
            self._peak = dict.fromkeys(self.roots, 0)

    def peak(self, name: str) -> int:
        with self._lock:
            return self._peak[name]

    def current(self, name: str) -> tuple[int, int]:
        """(RSS bytes, process count) of the tree in the latest sample."""
        with self._lock:
            return self._current[name]
