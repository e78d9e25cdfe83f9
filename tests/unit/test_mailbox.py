"""The mailbox store: addresses as directory names, atomic writes, racing account creation."""

from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmaild import mailbox
from chatmaild.mailbox import InvalidAddress, check_address, user_dir

ROOT = Path("/home/vmail/mail/example.org")
HASH_A = "{SHA512-CRYPT}$6$saltsaltsalt$" + "a" * 86
HASH_B = "{SHA512-CRYPT}$6$othersaltxyz$" + "b" * 86


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith(".tmp."))


# -- addresses -----------------------------------------------------------------------------------

HOSTILE = [
    "../x@d",
    "a/b@d",
    "a\0b@d",
    ".a@d",
    "..@d",
    ".@d",
    "a..b@d",
    "A@d",
    "abc@Example.org",
    "@d",
    "a@",
    "a@b@c",
    "abc",
    "",
    "a" * 290 + "@example.org",
    "a" * 65 + "@example.org",
    "a@../x",
    "a@..",
    "a@.",
    "a@d/e",
    "a@d\0",
    "a@[1.2.3.4",
    "a@1.2.3.4]",
    "a@[1.2.3.4]/x",
    "a@-d.org",
    "a@d-.org",
    "a@d..org",
    "a b@d",
    "a\n@d",
    "a@d\n",
    "ä@d",
    "a\udcff@d",
    "a+b@d",
    None,
    b"abc@example.org",
    42,
    ["abc@example.org"],
]


@pytest.mark.parametrize("addr", HOSTILE)
def test_hostile_address_is_refused(addr):
    with pytest.raises(InvalidAddress):
        check_address(addr)
    with pytest.raises(InvalidAddress):
        user_dir(ROOT, addr)


@pytest.mark.parametrize(
    ("addr", "parts"),
    [
        ("abc@example.org", ("abc", "example.org")),
        ("a.b-c_d@x.y", ("a.b-c_d", "x.y")),
        ("abc@[1.2.3.4]", ("abc", "[1.2.3.4]")),
        ("159shzhkb@example.org", ("159shzhkb", "example.org")),
        ("a@d", ("a", "d")),
        ("a" * 64 + "@example.org", ("a" * 64, "example.org")),
    ],
)
def test_well_formed_address_is_accepted(addr, parts):
    assert check_address(addr) == parts
    assert user_dir(ROOT, addr) == ROOT / addr


def test_user_dir_is_exactly_root_slash_address(tmp_path):
    assert user_dir(tmp_path, "abc@[1.2.3.4]") == tmp_path / "abc@[1.2.3.4]"
    assert str(user_dir(tmp_path, "abc@example.org")) == f"{tmp_path}/abc@example.org"


_address_like = st.lists(
    st.sampled_from(["a", "z", "0", ".", "..", "-", "_", "/", "@", "[", "]", "\0", "A", " ", "\n"])
    | st.sampled_from(["1.2.3.4", "example.org", "\udcff", "ä"]),
    max_size=12,
).map("".join)


def _check_is_direct_child(addr: str) -> None:
    try:
        path = user_dir(ROOT, addr)
    except InvalidAddress:
        return
    assert path.parent == ROOT
    assert path == ROOT / addr
    assert "/" not in path.name
    assert "\0" not in path.name
    assert path.name not in (".", "..", "")
    assert os.path.normpath(path) == str(path)


@given(st.text())
@example("..")
@example("../@d")
@example("a/../../etc@d")
def test_any_text_either_is_refused_or_names_a_direct_child(addr):
    _check_is_direct_child(addr)


@given(_address_like)
def test_any_address_like_text_either_is_refused_or_names_a_direct_child(addr):
    _check_is_direct_child(addr)


# -- atomic writes -------------------------------------------------------------------------------


def test_atomic_write_creates_file_with_mode_and_no_temp_files(tmp_path):
    path = tmp_path / "password"
    mailbox.atomic_write(path, b"secret", mode=0o640)
    assert path.read_bytes() == b"secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["password"]


def test_atomic_write_defaults_to_owner_only(tmp_path):
    path = tmp_path / "f"
    mailbox.atomic_write(path, b"x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_write_replaces_content_and_mode(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old content that is longer")
    path.chmod(0o600)
    mailbox.atomic_write(path, b"new", mode=0o644)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f"]


def test_failed_atomic_write_leaves_target_and_no_temp_files(tmp_path):
    target = tmp_path / "a-directory"
    target.mkdir()
    (target / "inside").write_bytes(b"kept")
    with pytest.raises(OSError):
        mailbox.atomic_write(target, b"data")
    assert (target / "inside").read_bytes() == b"kept"
    assert sorted(os.listdir(tmp_path)) == ["a-directory"]


def test_create_exclusive_creates_once_and_never_overwrites(tmp_path):
    path = tmp_path / "password"
    assert mailbox.create_exclusive(path, b"first", mode=0o640) is True
    assert mailbox.create_exclusive(path, b"second") is False
    assert mailbox.create_exclusive(path, b"third") is False
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["password"]


def test_create_exclusive_does_not_replace_an_existing_file(tmp_path):
    path = tmp_path / "password"
    path.write_bytes(b"operator's")
    assert mailbox.create_exclusive(path, b"mine") is False
    assert path.read_bytes() == b"operator's"
    assert leftovers(tmp_path) == []


# -- accounts ------------------------------------------------------------------------------------


def test_first_creation_writes_password_and_e2ee_marker(tmp_path):
    udir = user_dir(tmp_path, "abcdefghi@example.org")
    assert mailbox.create_account(udir, HASH_A) == (HASH_A, True)
    assert (udir / mailbox.PASSWORD_FILE).read_text() == HASH_A
    assert (udir / mailbox.ENFORCE_E2EE_FILE).read_bytes() == b""
    assert stat.S_IMODE(udir.stat().st_mode) == 0o700
    assert stat.S_IMODE((udir / mailbox.PASSWORD_FILE).stat().st_mode) == 0o600
    assert leftovers(udir) == []


def test_second_creation_returns_the_first_hash_unchanged(tmp_path):
    udir = tmp_path / "abcdefghi@example.org"
    mailbox.create_account(udir, HASH_A)
    assert mailbox.create_account(udir, HASH_B) == (HASH_A, False)
    assert (udir / mailbox.PASSWORD_FILE).read_text() == HASH_A
    assert leftovers(udir) == []


def test_creation_keeps_an_existing_maildir(tmp_path):
    udir = tmp_path / "abcdefghi@example.org"
    (udir / "cur").mkdir(parents=True)
    (udir / "cur" / "msg").write_bytes(b"mail")
    assert mailbox.create_account(udir, HASH_A) == (HASH_A, True)
    assert (udir / "cur" / "msg").read_bytes() == b"mail"


def test_read_password_of_missing_account_is_none(tmp_path):
    assert mailbox.read_password(tmp_path / "nobody@example.org") is None
    (tmp_path / "dir-only@example.org").mkdir()
    assert mailbox.read_password(tmp_path / "dir-only@example.org") is None


def test_read_password_returns_stored_scheme_hash(tmp_path):
    (tmp_path / "password").write_text(HASH_A + "\n")
    assert mailbox.read_password(tmp_path) == HASH_A


def test_read_password_prefixes_crypt_for_a_bare_crypt_hash(tmp_path):
    bare = "$6$saltsaltsalt$" + "c" * 86
    (tmp_path / "password").write_text(bare + "\n")
    assert mailbox.read_password(tmp_path) == "{CRYPT}" + bare


@pytest.mark.parametrize("content", ["", "\n", "  \n\t"])
def test_read_password_of_empty_file_raises_oserror(tmp_path, content):
    (tmp_path / "password").write_text(content)
    with pytest.raises(OSError, match="empty"):
        mailbox.read_password(tmp_path)


def test_creation_past_the_deadline_creates_no_password_file(tmp_path):
    udir = tmp_path / "abcdefghi@example.org"
    with pytest.raises(TimeoutError):
        mailbox.create_account(udir, HASH_A, deadline=time.monotonic() - 1)
    assert mailbox.read_password(udir) is None
    assert leftovers(udir) == []


def test_deadline_is_checked_after_the_slow_write_just_before_the_commit(tmp_path, monkeypatch):
    clock = FakeClock(100.0)
    monkeypatch.setattr(mailbox, "time", clock)
    real_write_temp = mailbox._write_temp

    def slow_write_temp(*args):
        written = real_write_temp(*args)
        clock.now += 5  # the write took 5 s
        return written

    monkeypatch.setattr(mailbox, "_write_temp", slow_write_temp)
    udir = tmp_path / "abcdefghi@example.org"
    with pytest.raises(TimeoutError):
        mailbox.create_account(udir, HASH_A, deadline=104.0)
    assert mailbox.read_password(udir) is None
    assert leftovers(udir) == []
    assert mailbox.create_account(udir, HASH_A, deadline=clock.now + 6) == (HASH_A, True)


def test_creation_past_the_deadline_returns_an_existing_account(tmp_path):
    udir = tmp_path / "abcdefghi@example.org"
    mailbox.create_account(udir, HASH_A)
    assert mailbox.create_account(udir, HASH_B, deadline=time.monotonic() - 1) == (HASH_A, False)
    assert leftovers(udir) == []


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_thread_creations_have_exactly_one_winner(tmp_path):
    udir = tmp_path / "abcdefghi@example.org"
    n = 32
    hashes = [f"{{SHA512-CRYPT}}$6$salt{i:04d}$" + "h" * 86 for i in range(n)]
    barrier = threading.Barrier(n)
    results: list[tuple[str, bool] | BaseException] = [None] * n  # type: ignore[list-item]

    def create(i: int) -> None:
        barrier.wait()
        try:
            results[i] = mailbox.create_account(udir, hashes[i])
        except BaseException as exc:  # reported below, with the others' results
            results[i] = exc

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert all(isinstance(r, tuple) for r in results), results
    on_disk = (udir / mailbox.PASSWORD_FILE).read_text()
    assert on_disk in hashes
    assert [created for _, created in results].count(True) == 1
    assert {stored for stored, _ in results} == {on_disk}
    winner = next(i for i, (_, created) in enumerate(results) if created)
    assert hashes[winner] == on_disk
    assert leftovers(udir) == []


def _create_in_child(barrier, udir: str, password_hash: str, results) -> None:
    barrier.wait()
    try:
        results.put(mailbox.create_account(Path(udir), password_hash))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_concurrent_process_creations_have_exactly_one_winner(tmp_path):
    udir = tmp_path / "abcdefghi@example.org"
    n = 8
    hashes = [f"{{SHA512-CRYPT}}$6$proc{i:04d}$" + "p" * 86 for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_create_in_child, args=(barrier, str(udir), hashes[i], queue))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * n

    assert all(isinstance(r[1], bool) for r in results), results
    on_disk = (udir / mailbox.PASSWORD_FILE).read_text()
    assert on_disk in hashes
    assert [created for _, created in results].count(True) == 1
    assert {stored for stored, _ in results} == {on_disk}
    assert leftovers(udir) == []
