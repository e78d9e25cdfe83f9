"""metadata.tokens: device tokens in <mailboxes_dir>/<addr>/metadata.json."""

from __future__ import annotations

import json
import multiprocessing
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild.mailbox import InvalidAddress
from metadata.tokens import (
    KEY,
    MAX_AGE,
    MAX_TOKENS,
    METADATA_FILE,
    RESTAMP_AFTER,
    TokenStore,
    check_token,
    parse,
)

NOW = 1_800_000_000.0
ADDR = "alice@example.org"


@pytest.fixture
def store(tmp_path) -> TokenStore:
    (tmp_path / "mail" / ADDR).mkdir(parents=True)
    return TokenStore(tmp_path / "mail")


def stored(store: TokenStore, addr: str = ADDR) -> dict:
    return json.loads((store.mailboxes_dir / addr / METADATA_FILE).read_bytes())


def test_tokens_of_several_devices_are_kept_with_the_time_they_were_set(store):
    store.add(ADDR, "tok-phone", now=NOW)
    store.add(ADDR, "tok-laptop", now=NOW + 5)
    assert store.tokens(ADDR, now=NOW + 10) == ["tok-phone", "tok-laptop"]
    assert stored(store) == {KEY: {"tok-phone": int(NOW), "tok-laptop": int(NOW) + 5}}
    store.add(ADDR, "tok-phone", now=NOW + RESTAMP_AFTER)  # a day later: newer stamp
    assert store.tokens(ADDR, now=NOW + RESTAMP_AFTER) == ["tok-laptop", "tok-phone"]
    assert len(stored(store)[KEY]) == 2


def test_setting_a_token_again_within_a_day_leaves_the_file_alone(store):
    store.add(ADDR, "tok", now=NOW)
    path = store.mailboxes_dir / ADDR / METADATA_FILE
    before = path.stat()
    store.add(ADDR, "tok", now=NOW + RESTAMP_AFTER - 1)  # the app starts again
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stored(store) == {KEY: {"tok": int(NOW)}}
    assert store.is_current(ADDR, "tok", now=NOW + RESTAMP_AFTER - 1)
    assert not store.is_current(ADDR, "tok", now=NOW + RESTAMP_AFTER)
    assert not store.is_current(ADDR, "other", now=NOW)
    store.add(ADDR, "tok", now=NOW + RESTAMP_AFTER)
    assert stored(store) == {KEY: {"tok": int(NOW + RESTAMP_AFTER)}}


def test_a_legacy_list_is_not_current_so_a_set_converts_it(store):
    path = store.mailboxes_dir / ADDR / METADATA_FILE
    path.write_text(json.dumps({KEY: ["tok"]}))
    assert not store.is_current(ADDR, "tok", now=NOW)
    store.add(ADDR, "tok", now=NOW)
    assert stored(store) == {KEY: {"tok": int(NOW)}}


def test_an_account_without_a_file_has_no_tokens(store):
    assert store.tokens(ADDR) == []


@pytest.mark.parametrize(
    ("age", "kept"),
    [(MAX_AGE - 1, True), (MAX_AGE + 1, False), (-59, True), (-61, False)],
    ids=["89d23h", "90d+1s", "59s-ahead", "61s-ahead"],
)
def test_tokens_expire_after_90_days_and_future_stamps_are_dropped(store, age, kept):
    path = store.mailboxes_dir / ADDR / METADATA_FILE
    path.write_text(json.dumps({KEY: {"tok": NOW - age}}))
    assert store.tokens(ADDR, now=NOW) == (["tok"] if kept else [])


def test_the_legacy_list_counts_as_set_now_and_becomes_the_object_on_change(store):
    path = store.mailboxes_dir / ADDR / METADATA_FILE
    path.write_text(json.dumps({KEY: ["old-1", "old-2"]}))
    assert store.tokens(ADDR, now=NOW) == ["old-1", "old-2"]
    store.add(ADDR, "new", now=NOW)
    assert stored(store) == {KEY: {"old-1": int(NOW), "old-2": int(NOW), "new": int(NOW)}}


def test_other_keys_in_the_file_are_kept(store):
    path = store.mailboxes_dir / ADDR / METADATA_FILE
    path.write_text(json.dumps({"something": {"else": 1}, KEY: {}}))
    store.add(ADDR, "tok", now=NOW)
    assert stored(store) == {"something": {"else": 1}, KEY: {"tok": int(NOW)}}


def test_a_dead_token_is_removed_and_the_others_stay(store):
    store.add(ADDR, "dead")
    store.add(ADDR, "alive")
    assert store.remove(ADDR, "dead") is True
    assert store.remove(ADDR, "dead") is False
    assert store.tokens(ADDR) == ["alive"]
    assert set(stored(store)[KEY]) == {"alive"}


def test_the_oldest_tokens_go_beyond_the_limit(store):
    for n in range(MAX_TOKENS + 3):
        store.add(ADDR, f"tok-{n}", now=NOW + n)
    tokens = store.tokens(ADDR, now=NOW + 100)
    assert (
        len(tokens) == MAX_TOKENS and tokens[0] == "tok-3" and tokens[-1] == f"tok-{MAX_TOKENS + 2}"
    )


@pytest.mark.parametrize(
    "addr",
    ["../x@example.org", "/abs@example.org", "a\x00b@example.org", "a/b@example.org", "x", ""],
)
def test_hostile_addresses_are_refused_and_nothing_is_written(store, tmp_path, addr):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidAddress):
        store.add(addr, "tok")
    with pytest.raises(InvalidAddress):
        store.tokens(addr)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_no_account_no_tokens_and_nothing_is_created(store, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(FileNotFoundError):
        store.add("bob@example.org", "tok")
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("token", ["", "a\nb", "a\tb", "a b", "x" * 5000, "\x00"])
def test_what_cannot_be_a_token_is_refused(store, token):
    with pytest.raises(ValueError):
        store.add(ADDR, token)
    with pytest.raises(ValueError):
        check_token(token)


def test_concurrent_changes_from_threads_all_survive(store):
    def add(n: int) -> None:
        for k in range(5):
            store.add(ADDR, f"t{n}-{k}")

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.remove(ADDR, "t0-0")
    assert len(store.tokens(ADDR)) == 39


def _add_in_process(mailboxes: str, n: int) -> None:
    from pathlib import Path

    store = TokenStore(Path(mailboxes))
    for k in range(10):
        store.add(ADDR, f"p{n}-{k}")


def test_concurrent_changes_from_processes_all_survive(store):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_add_in_process, args=(str(store.mailboxes_dir), n)) for n in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(store.tokens(ADDR)) == 40


@given(st.binary(max_size=2000))
def test_parse_never_raises_on_any_bytes(data):
    whole, tokens = parse(data, NOW)
    assert isinstance(whole, dict) and isinstance(tokens, dict)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_parse_never_raises_on_any_json_under_the_key(value):
    _, tokens = parse(json.dumps({KEY: value}).encode(), NOW)
    assert all(isinstance(t, str) for t in tokens)
