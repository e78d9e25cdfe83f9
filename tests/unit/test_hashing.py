"""Password hashing through libxcrypt: verifiable, salted, thread-safe, at low priority."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from doveauth import hashing
from doveauth.hashing import SCHEME, Hasher, hash_password

try:
    import crypt_r
except ImportError:  # Python before 3.13: the same module is still in the standard library
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as crypt_r

REPO = Path(__file__).resolve().parents[2]
SALT_CHARS = set("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def verifies(password: str, stored: str) -> bool:
    """Does Python's crypt (a second implementation's caller) accept ``password``?"""
    assert stored.startswith(SCHEME)
    crypt_hash = stored[len(SCHEME) :]
    return crypt_r.crypt(password, crypt_hash) == crypt_hash


# every password doveauth's policy lets through: UTF-8, no NUL, at most 256 bytes
_passwords = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1
).filter(lambda pw: len(pw.encode("utf-8")) <= 256)


@settings(max_examples=200, deadline=None)
@given(_passwords)
@example("correct-horse-battery")
@example("pässwörd✓")
@example("klz\"hl\\t64'q$6$")
@example("x" * 256)
@example("ä" * 128)  # 256 bytes
@example("🔑" * 64)  # 256 bytes of 4-byte characters
def test_hash_verifies_with_pythons_crypt(password):
    stored = hash_password(password)
    assert stored.startswith("{SHA512-CRYPT}$6$")
    assert verifies(password, stored)
    assert not verifies(password + "x", stored)


def test_every_hash_has_its_own_16_character_salt():
    hashes = [hash_password("correct-horse-battery") for _ in range(50)]
    salts = [h.split("$")[2] for h in hashes]
    assert len(set(salts)) == len(set(hashes)) == 50
    assert all(len(salt) == 16 and set(salt) <= SALT_CHARS for salt in salts)


@pytest.mark.parametrize(
    "password",
    [
        "password\0with-nul",  # C would hash "password" only
        "\0",
        "lone-surrogate-\udcff",
        "x" * 512,  # libxcrypt refuses passphrases of 512 bytes or more
    ],
)
def test_unhashable_password_raises_value_error(password):
    with pytest.raises(ValueError):
        hash_password(password)


def test_concurrent_hashing_threads_give_correct_distinct_hashes():
    threads, per_thread = 8, 12
    barrier = threading.Barrier(threads)
    results: dict[int, list[tuple[str, str]]] = {}

    def work(n: int) -> None:
        barrier.wait()
        passwords = [f"thread-{n}-password-{i}-{'ü' * i}" for i in range(per_thread)]
        results[n] = [(pw, hash_password(pw)) for pw in passwords]

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    pairs = [pair for n in range(threads) for pair in results[n]]
    assert len({stored for _, stored in pairs}) == threads * per_thread
    assert all(verifies(pw, stored) for pw, stored in pairs)


# -- the pool ------------------------------------------------------------------------------------


def test_hasher_hashes_in_threads_of_lower_priority():
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def run(hasher: Hasher) -> str:
        await hasher.warm_up()
        return await hasher.hash("correct-horse-battery")

    with Hasher(workers=2) as hasher:
        stored = asyncio.run(run(hasher))
        pool_threads = [t for t in threading.enumerate() if t.name.startswith("hashing")]
        niceness = {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in pool_threads}
    assert verifies("correct-horse-battery", stored)
    assert 1 <= len(pool_threads) <= 2
    assert niceness == {min(own + hashing.HASHING_NICENESS, hashing.MAX_NICENESS)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own  # the caller's
    assert not [t for t in threading.enumerate() if t.name.startswith("hashing")]  # closed


def test_importing_doveauth_imports_no_multiprocessing():
    code = (
        "import sys, doveauth.__main__, doveauth.auth, doveauth.hashing\n"
        "print(sorted(m for m in sys.modules if m.startswith('multiprocessing')"
        " or m == 'concurrent.futures.process'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.stdout.strip() == "[]"
