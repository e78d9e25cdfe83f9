"""Password hashing through libxcrypt: verifiable, salted, thread-safe; pool size and priority."""

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
from doveauth.hashing import SCHEME, Hasher, cpu_limit, hash_password

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


def test_hasher_defaults_to_the_usable_cpus():
    with Hasher() as hasher:
        assert hasher.workers == hashing.usable_cpus()


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


# -- how many CPUs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("affinity", "cpu_max_texts", "cpus"),
    [
        (8, [], 8),
        (8, ["max 100000\n"], 8),
        (8, ["150000 100000\n"], 2),  # 1.5 CPUs: two may run part of the time
        (8, ["100000 100000\n"], 1),
        (8, ["50000 100000\n"], 1),  # half a CPU is still one
        (8, ["1000 100000\n"], 1),
        (8, ["400000 100000\n"], 4),
        (2, ["400000 100000\n"], 2),  # the affinity mask is the tighter limit
        (8, ["max 100000\n", "300000 100000\n", "600000 100000\n"], 3),  # the parents' too
        (8, ["200000 50000\n"], 4),  # another period
        (0, [], 1),
        (1, ["max\n"], 1),
        (4, ["", "garbage", "1 0", "max max"], 4),  # unreadable: no limit
    ],
)
def test_cpu_limit_takes_affinity_and_cgroup_quota(affinity, cpu_max_texts, cpus):
    assert cpu_limit(affinity, cpu_max_texts) == cpus


def test_usable_cpus_is_within_the_affinity_mask():
    assert 1 <= hashing.usable_cpus() <= len(os.sched_getaffinity(0))


def test_cgroup_quota_files_are_read_up_to_the_root(tmp_path, monkeypatch):
    own = tmp_path / "system.slice" / "doveauth.service"
    own.mkdir(parents=True)
    (own / "cpu.max").write_text("max 100000\n")
    (tmp_path / "system.slice" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    monkeypatch.setattr(hashing, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(hashing, "_own_cgroup", lambda: own)
    texts = hashing._cpu_max_texts()
    assert texts == ["max 100000\n", "150000 100000\n", "max 100000\n"]
    assert cpu_limit(8, texts) == 2


@pytest.mark.parametrize(
    ("proc_self_cgroup", "directory"),
    [
        ("0::/system.slice/doveauth.service\n", "system.slice/doveauth.service"),
        ("0::/\n", ""),  # in a cgroup namespace (a container): its own root
        ("12:cpu,cpuacct:/x\n1:name=systemd:/y\n0::/user.slice\n", "user.slice"),  # hybrid
        ("4:memory:/x\n1:cpu:/\n", ""),  # cgroup v1 only
        ("", ""),
    ],
)
def test_cgroup_dir_is_the_v2_line_of_proc_self_cgroup(proc_self_cgroup, directory):
    assert hashing.cgroup_dir(proc_self_cgroup) == hashing.CGROUP_ROOT / directory
