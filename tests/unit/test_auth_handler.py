"""AuthDict's decisions without sockets: what each kind of passdb key gets, and that a sign-up
never answers a failure (Dovecot would log the key, which holds the password)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from chatmaild import config
from chatmaild import dictproto as dp
from chatmaild import dictreply as dr
from chatmaild.dictconn import DictConnection
from chatmaild.mailbox import read_password
from doveauth import auth
from doveauth.auth import AuthDict, AuthSettings


class FakeHasher:
    workers = 1

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour

    async def hash(self, password: str) -> str:
        if self.behaviour == "raise":
            raise ValueError("crypt refused the password")
        if self.behaviour == "hang":
            await asyncio.sleep(60)
        return "{SHA512-CRYPT}$6$salt$hash"


@pytest.fixture
def settings(tmp_path):
    cfg = config.parse(
        "[params]\nmail_domain = example.org\n"
        f"mailboxes_dir = {tmp_path / 'mail'}\nnocreate_file = {tmp_path / 'nocreate'}\n"
        "max_load_1m = 1000\nmin_available_memory = 1M\nmin_free_disk_space = 1M\n"
    )
    return AuthSettings.from_config(cfg)


def signup_key(localpart: str, password: str = "password123") -> str:
    return f'shared/passdb/{password}"{localpart}@example.org'


def lookup(handler: AuthDict, key: str) -> dr.LookupResult:
    async def run():
        result = handler.lookup(dp.Lookup(key))
        return await result if asyncio.iscoroutine(result) else result

    return asyncio.run(run())


def test_passwordless_key_of_a_new_allowed_address_defers_to_the_next_passdb(settings):
    handler = AuthDict(settings, FakeHasher())
    assert lookup(handler, "shared/passdb/abcdefghi@example.org") == auth.NEXT_PASSDB
    assert json.loads(auth.NEXT_PASSDB.value) == {"noauthenticate": "y"}


@pytest.mark.parametrize("addr", ["short@example.org", "abcdefghi@other.org", "../x@example.org"])
def test_passwordless_key_of_an_address_that_can_never_exist_is_not_found(settings, addr):
    assert lookup(AuthDict(settings, FakeHasher()), f"shared/passdb/{addr}") == dr.NOT_FOUND


def test_existing_account_is_found_by_either_key_without_creating(settings):
    handler = AuthDict(settings, FakeHasher())
    created = lookup(handler, 'shared/passdb/password123"abcdefghi@example.org')
    assert json.loads(created.value)["password"] == "{SHA512-CRYPT}$6$salt$hash"
    assert lookup(handler, "shared/passdb/abcdefghi@example.org") == created


@pytest.mark.parametrize("behaviour", ["raise", "hang"])
def test_a_failing_sign_up_answers_not_found_never_a_failure(settings, behaviour, monkeypatch):
    monkeypatch.setattr(auth, "SIGNUP_DEADLINE", 0.1)
    handler = AuthDict(settings, FakeHasher(behaviour))
    assert lookup(handler, 'shared/passdb/password123"abcdefghi@example.org') == dr.NOT_FOUND
    assert handler._creating == 0
    assert not (settings.mailboxes_dir / "abcdefghi@example.org" / "password").exists()


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return False


def test_a_lookup_that_raises_is_answered_not_found_never_a_failure(settings, monkeypatch):
    handler = AuthDict(settings, FakeHasher())

    def bug(key):
        raise RuntimeError("a bug in the handler")

    monkeypatch.setattr(handler, "_passdb", bug)
    conn, transport = DictConnection(handler, set()), FakeTransport()
    conn.connection_made(transport)
    conn.data_received(b'H3\t2\t0\t\tauth\nLshared/passdb/secret-pw"abcdefghi@example.org\t\n')
    assert bytes(transport.out) == b"N\n"


def test_sign_ups_beyond_the_queue_are_refused_at_once(settings, monkeypatch):
    monkeypatch.setattr(auth, "MAX_CREATIONS_IN_FLIGHT", 2)
    handler = AuthDict(settings, FakeHasher("hang"))

    async def burst():
        # all four arrive in one read; the first two are taken, the rest refused when they start
        tasks = [
            asyncio.ensure_future(handler.lookup(dp.Lookup(signup_key(f"abcdefgh{i}"))))
            for i in range(4)
        ]
        for _ in range(3):
            await asyncio.sleep(0)
        assert [t.done() for t in tasks] == [False, False, True, True]
        assert [t.result() for t in tasks[2:]] == [dr.NOT_FOUND, dr.NOT_FOUND]
        assert handler._creating == 2
        for t in tasks[:2]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert handler._creating == 0

    asyncio.run(burst())


@pytest.mark.parametrize("discard", ["close", "cancel"])
def test_sign_ups_dropped_before_they_start_take_no_slot(settings, discard):
    handler = AuthDict(settings, FakeHasher())

    async def drop_many_then_sign_up():
        for _ in range(auth.MAX_CREATIONS_IN_FLIGHT + 10):
            pending = handler.lookup(dp.Lookup(signup_key("abcdefghi")))
            assert asyncio.iscoroutine(pending)
            if discard == "close":
                pending.close()
            else:
                task = asyncio.ensure_future(pending)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        assert handler._creating == 0
        return await handler.lookup(dp.Lookup(signup_key("abcdefghi")))

    assert isinstance(asyncio.run(drop_many_then_sign_up()), dr.Found)
    assert handler._creating == 0


def test_a_sign_up_answered_not_found_at_the_deadline_creates_no_account(settings, monkeypatch):
    # the disk is slow: the deadline passes while the account is being written
    monkeypatch.setattr(auth, "SIGNUP_DEADLINE", 0.1)
    real_create_account = auth.create_account

    def slow_create_account(*args, **kwargs):
        time.sleep(0.4)
        return real_create_account(*args, **kwargs)

    monkeypatch.setattr(auth, "create_account", slow_create_account)
    handler = AuthDict(settings, FakeHasher())
    # asyncio.run returns only when every to_thread() thread has finished
    reply = lookup(handler, signup_key("abcdefghi"))
    udir = settings.mailboxes_dir / "abcdefghi@example.org"
    assert (reply, read_password(udir)) == (dr.NOT_FOUND, None)  # the reply and the disk agree
    assert handler._creating == 0


def test_a_sign_up_committed_by_the_deadline_is_found(settings, monkeypatch):
    monkeypatch.setattr(auth, "SIGNUP_DEADLINE", 60)
    handler = AuthDict(settings, FakeHasher())
    reply = lookup(handler, signup_key("abcdefghi"))
    udir = settings.mailboxes_dir / "abcdefghi@example.org"
    assert json.loads(reply.value)["password"] == read_password(udir)
