"""SHA512-CRYPT hashing for new accounts, in worker processes.

Why processes: CPython's crypt holds the GIL while it hashes (about 1.3 ms per password here), so
hashing in threads would stall the event loop that answers every other login. The workers run at
a lower scheduling priority, so a burst of sign-ups yields the CPU to lookups of existing
accounts. Workers are started with ``spawn`` (never ``fork`` from a process running an event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

try:
    import crypt_r
except ImportError:  # Python before 3.13: the same module is still in the standard library
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as crypt_r

log = logging.getLogger(__name__)

SCHEME = "{SHA512-CRYPT}"
WORKER_NICENESS = 10


def hash_password(password: str) -> str:
    """The Dovecot-verifiable SHA512-CRYPT hash of ``password``."""
    hashed = crypt_r.crypt(password, crypt_r.mksalt(crypt_r.METHOD_SHA512))
    if not hashed or not hashed.startswith("$6$"):
        raise ValueError("crypt refused the password")
    return SCHEME + hashed


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _init_worker() -> None:
    """In each worker: yield the CPU to the event loop, and die with doveauth.

    Without the parent-death signal a doveauth killed with SIGKILL (or by the OOM killer)
    would leave its workers running forever.
    """
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


class Hasher:
    """A pool of hashing processes; ``await hasher.hash(pw)`` from the event loop.

    If a worker dies (OOM killer, an operator's kill), the pool is replaced and the hash retried
    once, so sign-ups keep working instead of failing until the daemon restarts.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, hash_password, password)
        except BrokenProcessPool:
            if self._pool is pool:  # the first caller to notice replaces it
                log.error("a hashing worker died: starting new workers")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            return await loop.run_in_executor(self._pool, hash_password, password)

    async def warm_up(self) -> None:
        """Start the workers now, so the first sign-up does not wait for them."""
        await asyncio.gather(*(self.hash("warm-up-password") for _ in range(self.workers)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Hasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
