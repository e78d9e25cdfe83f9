"""SHA512-CRYPT hashing for new accounts, in a few threads of doveauth's own process.

Why threads: libxcrypt's ``crypt_rn`` is called through ctypes, which releases the GIL for the
whole foreign call (about 1.3 ms per password here), so the hashing threads hash in parallel with
each other and the event loop goes on answering every other login meanwhile. Python's crypt module
holds the GIL while it hashes, which is why doveauth used to hash in worker processes; those cost
about 20 MB each plus multiprocessing's resource tracker, and needed machinery for a killed worker.
Now doveauth is one process and imports no multiprocessing.

Each hashing thread lowers its own scheduling priority (on Linux a thread's nice value is its own),
so a burst of sign-ups yields the CPU to lookups of existing accounts. The pool has one thread per
CPU this process may run on (its affinity mask, capped by a cgroup v2 ``cpu.max`` quota).

Salts come from libxcrypt's ``crypt_gensalt_rn``, which reads the kernel's random source.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

SCHEME = "{SHA512-CRYPT}"
SHA512_PREFIX = b"$6$"
# how much lower than the event loop a hashing thread runs (nice values go up to 19)
HASHING_NICENESS = 10
MAX_NICENESS = 19

# <crypt.h> of libxcrypt: sizeof(struct crypt_data) is exactly 32768 bytes, and crypt_rn needs
# at least that much; a gensalt output is at most CRYPT_GENSALT_OUTPUT_SIZE.
CRYPT_DATA_SIZE = 32768
CRYPT_GENSALT_OUTPUT_SIZE = 192

_libcrypt = ctypes.CDLL("libcrypt.so.1", use_errno=True)  # libxcrypt's soname
_crypt_rn = _libcrypt.crypt_rn
_crypt_rn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int)
_crypt_rn.restype = ctypes.c_char_p  # NULL on any failure, never a "*0" failure token
_gensalt_rn = _libcrypt.crypt_gensalt_rn
_gensalt_rn.argtypes = (
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
)
_gensalt_rn.restype = ctypes.c_char_p

# crypt_rn's work area, one per thread: zeroed when created, as <crypt.h> asks before first use.
_scratch = threading.local()


def _crypt_data() -> ctypes.Array[ctypes.c_char]:
    data = getattr(_scratch, "data", None)
    if data is None:
        data = _scratch.data = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
    return data


def new_salt() -> bytes:
    """A fresh SHA512-CRYPT setting (``$6$`` and 16 salt characters, default rounds)."""
    out = ctypes.create_string_buffer(CRYPT_GENSALT_OUTPUT_SIZE)
    # count 0: the default number of rounds; rbytes NULL: libxcrypt gets the random bytes itself
    setting = _gensalt_rn(SHA512_PREFIX, 0, None, 0, out, len(out))
    if not setting:
        raise OSError(ctypes.get_errno(), "crypt_gensalt_rn gave no salt")
    return setting


def hash_password(password: str) -> str:
    """The Dovecot-verifiable SHA512-CRYPT hash of ``password``; ValueError if it has none.

    Blocking (about 1.3 ms, more for long passwords) but without the GIL: call it in a thread.
    """
    phrase = password.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if b"\0" in phrase:
        raise ValueError("password contains NUL")  # C would hash only the part before it
    data = _crypt_data()
    hashed = _crypt_rn(phrase, new_salt(), data, len(data))
    if not hashed or not hashed.startswith(SHA512_PREFIX):
        raise ValueError("crypt refused the password")
    return SCHEME + hashed.decode("ascii")


def cpu_limit(affinity: int, cpu_max_texts: Iterable[str] = ()) -> int:
    """How many CPUs a process may use: its affinity count, capped by cgroup v2 quotas, >= 1.

    ``cpu_max_texts`` are contents of ``cpu.max`` files: "QUOTA PERIOD" in microseconds, QUOTA
    "max" for no limit. A quota of 1.5 periods lets two CPUs work part of the time, so it counts
    as 2. Text that does not parse is ignored (no limit).
    """
    count = affinity
    for text in cpu_max_texts:
        quota, _, period = text.strip().partition(" ")
        try:
            cpus = math.ceil(int(quota) / int(period))
        except (ValueError, ZeroDivisionError):  # "max", or nothing we understand
            continue
        count = min(count, cpus)
    return max(count, 1)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_dir(proc_self_cgroup: str) -> Path:
    """The cgroup v2 directory named by /proc/self/cgroup's "0::/path" line, else the root."""
    lines = proc_self_cgroup.splitlines()
    path = next((line[3:] for line in lines if line.startswith("0::")), "/")
    return CGROUP_ROOT / path.lstrip("/")


def _own_cgroup() -> Path:
    try:
        return cgroup_dir(Path("/proc/self/cgroup").read_text())
    except OSError:
        return CGROUP_ROOT


def _cpu_max_texts() -> list[str]:
    """``cpu.max`` of this process's cgroup and of each parent up to the root, where readable."""
    cgroup = _own_cgroup()
    texts = []
    for directory in (cgroup, *cgroup.parents):
        with contextlib.suppress(OSError):  # none in the root cgroup, nor on cgroup v1
            texts.append((directory / "cpu.max").read_text())
        if directory == CGROUP_ROOT:
            break
    return texts


def usable_cpus() -> int:
    """The CPUs this process may actually run on (os.cpu_count() counts the machine's)."""
    return cpu_limit(len(os.sched_getaffinity(0)), _cpu_max_texts())


def lower_thread_priority(niceness: int = HASHING_NICENESS) -> None:
    """Make the calling thread (only it: nice is per thread on Linux) ``niceness`` nicer."""
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(current + niceness, MAX_NICENESS))
    except OSError as exc:
        log.warning("hashing thread keeps its priority: %s", exc)


class Hasher:
    """A few low-priority hashing threads; ``await hasher.hash(pw)`` from the event loop."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or usable_cpus()
        self._pool = ThreadPoolExecutor(
            max_workers=self.workers,
            thread_name_prefix="hashing",
            initializer=lower_thread_priority,
        )

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, hash_password, password)

    async def warm_up(self) -> None:
        """Start the threads and hash once in each: a broken libcrypt shows at start."""
        await asyncio.gather(*(self.hash("warm-up-password") for _ in range(self.workers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Hasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
