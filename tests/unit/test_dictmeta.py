"""metadata.dictmeta: Dovecot's METADATA dict, with the keys Dovecot 2.3.19 sends."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.dictconn import Transaction
from metadata.dictmeta import Key, MetadataDict, ServerValues, parse_key
from metadata.tokens import TokenStore

GUID = "09c3d02307910f6bdd7f000083ecc375"
ALICE, BOB = "alice@example.org", "bob@example.org"
TOKEN_KEY = f"priv/{GUID}/devicetoken"
NEW_KEY = f"priv/{GUID}/messagenew"
SERVER = f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/"


def resolve(result):
    return asyncio.run(result) if inspect.isawaitable(result) else result


@pytest.fixture
def world(tmp_path):
    for addr in (ALICE, BOB):
        (tmp_path / addr).mkdir()
    notified: list[tuple[str, list[str]]] = []
    server = ServerValues({"irohrelay": lambda: "https://iroh.example.org", "turn": lambda: None})

    async def notify(addr: str, tokens: list[str]) -> None:
        notified.append((addr, list(tokens)))

    handler = MetadataDict(TokenStore(tmp_path), "example.org", server, notify)
    return handler, notified, tmp_path


def commit(handler, user, *changes):
    return resolve(handler.commit(Transaction(1, user, list(changes))))


def lookup(handler, key, user=ALICE):
    return resolve(handler.lookup(dp.Lookup(key, user)))


def test_two_devices_set_their_tokens_and_a_lookup_returns_both(world):
    handler, _, _ = world
    assert commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1")) is None
    assert commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-2")) is None
    assert lookup(handler, TOKEN_KEY) == dr.Found("tok-1 tok-2")
    assert lookup(handler, TOKEN_KEY, BOB) == dr.NOT_FOUND


def test_setting_a_token_again_answers_without_a_thread_or_a_write(world, monkeypatch):
    handler, _, tmp_path = world
    assert commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1")) is None
    before = (tmp_path / ALICE / "metadata.json").stat()

    def no_thread(*args):
        raise AssertionError("a set that changes nothing went to a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    assert commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1")) is None
    after = (tmp_path / ALICE / "metadata.json").stat()
    assert after.st_mtime_ns == before.st_mtime_ns and after.st_ino == before.st_ino
    # anything else takes the full path: a new token, a foreign user, another key
    for user, change in [
        (ALICE, dp.Set(1, TOKEN_KEY, "tok-2")),
        ("mallory@evil.example", dp.Set(1, TOKEN_KEY, "tok-1")),
        (ALICE, dp.Set(1, NEW_KEY, "")),
    ]:
        with pytest.raises(AssertionError, match="worker thread"):
            commit(handler, user, change)


def test_messagenew_notifies_each_token_of_the_user(world):
    handler, notified, _ = world
    commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1"), dp.Set(1, TOKEN_KEY, "tok-2"))
    assert commit(handler, ALICE, dp.Set(1, NEW_KEY, "")) is None
    assert commit(handler, BOB, dp.Set(1, NEW_KEY, "")) is None  # no tokens: nothing to send
    assert notified == [(ALICE, ["tok-1", "tok-2"]), (BOB, [])]


def test_unsetting_the_token_is_accepted_and_keeps_the_tokens(world):
    handler, _, _ = world
    commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1"))
    assert commit(handler, ALICE, dp.Unset(1, TOKEN_KEY)) is None
    assert lookup(handler, TOKEN_KEY) == dr.Found("tok-1")


def test_server_values_answer_for_every_user_and_absent_ones_are_not_found(world):
    handler, _, _ = world
    assert lookup(handler, SERVER + "irohrelay", BOB) == dr.Found("https://iroh.example.org")
    assert lookup(handler, SERVER + "turn") == dr.NOT_FOUND
    assert lookup(handler, SERVER + "unknown") == dr.NOT_FOUND


@pytest.mark.parametrize(
    "key", [f"priv/{GUID}/other", f"shared/{GUID}/foo", "priv/", "garbage", SERVER + "a/b", ""]
)
def test_unknown_keys_are_not_found_and_cannot_be_set(world, key):
    handler, _, tmp_path = world
    assert lookup(handler, key) == dr.NOT_FOUND
    result = commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok"), dp.Set(1, key, "x"))
    assert isinstance(result, dr.Failed)
    assert not (tmp_path / ALICE / "metadata.json").exists()  # the good change was not applied


@pytest.mark.parametrize(
    "user",
    ["../x@example.org", "/abs@example.org", "a\x00b@example.org", "carol@example.net", "", "x"],
)
def test_hostile_or_foreign_users_fail_and_nothing_is_written(world, user):
    handler, notified, tmp_path = world
    before = sorted(tmp_path.rglob("*"))
    assert isinstance(commit(handler, user, dp.Set(1, TOKEN_KEY, "tok")), dr.Failed)
    assert isinstance(commit(handler, user, dp.Set(1, NEW_KEY, "")), dr.Failed)
    assert isinstance(lookup(handler, TOKEN_KEY, user), dr.Failed)
    assert sorted(tmp_path.rglob("*")) == before and notified == []


def test_a_user_without_an_account_fails(world):
    handler, _, tmp_path = world
    assert isinstance(commit(handler, "carol@example.org", dp.Set(1, TOKEN_KEY, "t")), dr.Failed)
    assert not (tmp_path / "carol@example.org").exists()


def test_a_queue_that_cannot_be_written_fails_the_delivery_hook(tmp_path, caplog):
    """messagenew is answered only once the notifications are on disk; if they cannot be
    written, Dovecot hears a failure (and logs it), not a success that loses them."""
    (tmp_path / ALICE).mkdir()

    async def full_disk(addr: str, tokens: list[str]) -> None:
        raise OSError(28, "No space left on device")

    handler = MetadataDict(TokenStore(tmp_path), "example.org", ServerValues({}), full_disk)
    commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1"))
    assert commit(handler, ALICE, dp.Set(1, NEW_KEY, "")) == dr.Failed("cannot queue")
    assert "cannot queue the push notifications" in caplog.text


def test_a_token_with_spaces_fails(world):
    handler, _, _ = world
    assert isinstance(commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "a b")), dr.Failed)


def test_depth_listing_returns_the_token_key_under_the_asked_prefix(world):
    handler, _, _ = world
    commit(handler, ALICE, dp.Set(1, TOKEN_KEY, "tok-1"))
    rows = resolve(handler.iterate(dp.Iterate(9, 0, f"priv/{GUID}/", ALICE)))
    assert rows == [(TOKEN_KEY, "tok-1")]
    for prefix in (f"shared/{GUID}/", f"priv/{GUID}/vendor/", f"priv/{GUID}/x"):
        assert resolve(handler.iterate(dp.Iterate(9, 0, prefix, ALICE))) == []
    # every returned key starts with the prefix (Dovecot asserts this)
    assert all(k.startswith(f"priv/{GUID}/") for k, _ in rows)


def test_keys_dovecot_sends_are_understood():
    assert parse_key(TOKEN_KEY) == Key("private", "devicetoken")
    assert parse_key(NEW_KEY) == Key("private", "messagenew")
    assert parse_key(SERVER + "irohrelay") == Key("server", "irohrelay")
    assert parse_key(f"shared/{GUID}/vendor/deltachat/irohrelay") is None


@given(st.text(max_size=200))
def test_parse_key_never_raises(key):
    parsed = parse_key(key)
    assert parsed is None or parsed.kind in ("private", "server")
