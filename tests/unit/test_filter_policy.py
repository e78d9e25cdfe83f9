"""filtermail.policy: what passes and what is refused, as tables over (direction, envelope,
message, mailbox facts); and no message bytes at all make a decision raise."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_mime import PLAIN, bounce, encrypted_mail, secure_join, setup_message

from chatmaild.mailbox import ENFORCE_E2EE_FILE, PASSWORD_FILE, InvalidAddress
from filtermail.policy import (
    INCOMING,
    OUTGOING,
    Decision,
    Envelope,
    Mailboxes,
    decide,
    recipient_refusal,
)

ALICE = "alice@example.org"  # the sender in test_mime's messages
ARMOR_HEADERS = encrypted_mail().replace(
    b"-----BEGIN PGP MESSAGE-----\r\n", b"-----BEGIN PGP MESSAGE-----\r\nVersion: X 1\r\n"
)


def enforcing(rcpt: str) -> bool:
    return not rcpt.startswith("relaxed")


def outgoing(message: bytes, sender: str = ALICE, rcpts: tuple[str, ...] = ("b@x.org",)):
    return decide(OUTGOING, Envelope(sender, rcpts), message, enforcing)


def incoming(message: bytes, rcpts: tuple[str, ...] = ("bob@[127.0.0.1]",)):
    return decide(INCOMING, Envelope("x@y.org", rcpts), message, enforcing)


@pytest.mark.parametrize(
    ("message", "sender", "rcpts", "code", "why"),
    [
        (encrypted_mail(), ALICE, ("b@x.org",), 250, "encrypted"),
        (encrypted_mail(), "Alice@Example.org", ("b@x.org",), 250, "encrypted"),
        (secure_join(), ALICE, ("b@x.org",), 250, "secure-join request"),
        (setup_message().replace(b"a@x.org", ALICE.encode()), ALICE, (ALICE,), 250, "setup"),
        (setup_message().replace(b"a@x.org", ALICE.encode()), ALICE, ("b@x.org",), 523, ""),
        (ARMOR_HEADERS, ALICE, ("b@x.org",), 523, "reveal the client"),
        (PLAIN, ALICE, ("b@x.org",), 523, "text/plain is not"),
        (encrypted_mail(), "mallory@example.org", ("b@x.org",), 550, "From mismatch"),
        (
            encrypted_mail().replace(b"From: alice@example.org", b"From: a@x.org, b@x.org"),
            ALICE,
            ("b@x.org",),
            550,
            "no single From",
        ),
        (
            encrypted_mail().replace(b"From: alice@example.org\r\n", b""),
            ALICE,
            ("b@x.org",),
            550,
            "no single From",
        ),
        (
            b"From: alice@example.org\r\n" + encrypted_mail(),
            ALICE,
            ("b@x.org",),
            550,
            "no single From",
        ),
        (bounce(ALICE), ALICE, ("b@x.org",), 523, "multipart/report"),
        (PLAIN, ALICE, ("relaxed@x.org",), 523, ""),  # only incoming mail may be relaxed
    ],
)
def test_outgoing(message, sender, rcpts, code, why):
    decision = outgoing(message, sender, rcpts)
    assert decision.code == code
    assert why in decision.why
    assert decision.keep_subject == (why == "setup")


@pytest.mark.parametrize(
    ("message", "rcpts", "code", "why"),
    [
        (encrypted_mail(), ("bob@[127.0.0.1]",), 250, "encrypted"),
        (ARMOR_HEADERS, ("bob@[127.0.0.1]",), 250, "encrypted"),
        (secure_join(), ("bob@[127.0.0.1]",), 250, "secure-join"),
        (bounce(), ("bob@[127.0.0.1]",), 250, "bounce"),
        (PLAIN, ("relaxed@[127.0.0.1]",), 250, "allow"),
        (PLAIN, ("relaxed@[127.0.0.1]", "relaxed2@[127.0.0.1]"), 250, "allow"),
        (PLAIN, ("relaxed@[127.0.0.1]", "bob@[127.0.0.1]"), 523, "unencrypted"),
        (PLAIN, ("bob@[127.0.0.1]",), 523, "text/plain is not"),
        (setup_message(), ("a@x.org",), 523, "multipart/mixed"),
        (bounce(auto="no"), ("bob@[127.0.0.1]",), 523, "multipart/report"),
        (b"\xff\xfe garbage \x00\r\n\r\n--", ("bob@[127.0.0.1]",), 523, "unencrypted"),
    ],
)
def test_incoming(message, rcpts, code, why):
    decision = incoming(message, rcpts)
    assert decision.code == code
    assert why in decision.why


def test_replies_are_smtp_lines():
    assert incoming(PLAIN).reply == "523 Encryption Needed: Invalid Unencrypted Mail"
    assert incoming(encrypted_mail()).reply.startswith("250 ")
    assert outgoing(encrypted_mail(), "m@example.org").reply.startswith("550 5.7.1 ")


def test_incoming_tells_the_from_domain_for_dkim():
    assert incoming(encrypted_mail()).from_domain == "example.org"
    assert incoming(encrypted_mail().replace(b"From: alice@example.org\r\n", b"")).from_domain == ""


# -- recipients ----------------------------------------------------------------------------------

ACCOUNTS = {"known@[127.0.0.1]"}


def exists(account: str) -> bool:
    if "/" in account or account.startswith("."):
        raise InvalidAddress("bad")
    return account in ACCOUNTS


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("known@[127.0.0.1]", False),
        ("Known@[127.0.0.1]", False),
        ("unknown@[127.0.0.1]", True),
        ("../x@[127.0.0.1]", True),
        ("someone@example.org", False),  # not ours: Postfix knows where it goes
        ("someone@127.0.0.1", False),
    ],
)
def test_recipients_of_our_domain_must_have_an_account(address, refused):
    decision = recipient_refusal(address, "[127.0.0.1]", exists)
    if not refused:
        assert decision is None
        return
    assert isinstance(decision, Decision)
    assert decision.reply == f"550 5.1.1 <{address}>: Recipient address rejected: no such user"


def test_mailboxes_read_the_account_files(tmp_path: Path):
    mailboxes = Mailboxes(tmp_path)
    (tmp_path / "strict@[127.0.0.1]").mkdir()
    (tmp_path / "strict@[127.0.0.1]" / PASSWORD_FILE).write_text("{PLAIN}x")
    (tmp_path / "strict@[127.0.0.1]" / ENFORCE_E2EE_FILE).write_text("")
    (tmp_path / "relaxed@[127.0.0.1]").mkdir()
    (tmp_path / "relaxed@[127.0.0.1]" / PASSWORD_FILE).write_text("{PLAIN}x")
    assert mailboxes.exists("strict@[127.0.0.1]")
    assert not mailboxes.exists("nobody@[127.0.0.1]")
    assert mailboxes.enforces_encryption("strict@[127.0.0.1]")
    assert not mailboxes.enforces_encryption("relaxed@[127.0.0.1]")
    assert mailboxes.enforces_encryption("../etc@[127.0.0.1]")
    with pytest.raises(InvalidAddress):
        mailboxes.exists("../etc@[127.0.0.1]")


# -- never a crash -------------------------------------------------------------------------------


@given(st.binary(max_size=2000), st.sampled_from([OUTGOING, INCOMING]))
def test_no_message_bytes_make_a_decision_raise(data, direction):
    decision = decide(direction, Envelope(ALICE, ("relaxed@x", "b@x")), data, enforcing)
    assert decision.code in (250, 523, 550)


HEADERS = [
    b"From: alice@example.org\r\n",
    b"From: =?utf-8?q?=FF?= <alice@example.org>\r\n",
    b"Content-Type: multipart/encrypted; boundary=\r\n",
    b"Content-Type: multipart/report; boundary=*0*=x\r\n",
    b"Secure-Join: vc-request\r\n",
    b"Subject: Autocrypt Setup Message\r\n",
    b"Content-Type: multipart/mixed; boundary*0*=us-ascii''%FF\r\n",
    b"Auto-Submitted: auto-replied\r\n",
    b"From: MAILER-DAEMON@[1.2.3.4]\r\n",
]


@given(st.lists(st.sampled_from(HEADERS), max_size=6), st.binary(max_size=300))
def test_no_header_combination_makes_a_decision_raise(headers, body):
    data = b"".join(headers) + b"\r\n" + body
    for direction in (OUTGOING, INCOMING):
        decide(direction, Envelope(ALICE, (ALICE,)), data, enforcing)


@pytest.mark.parametrize(
    "field",
    [
        b" " + b"(" * 500 + b")" * 500,  # the email package would recurse once per comment
        b"".join(b"; p%d=v" % i for i in range(20_000)),  # and parse this in superlinear time
    ],
)
@pytest.mark.parametrize("direction", [OUTGOING, INCOMING])
def test_hostile_content_type_fields_are_decided_quickly(field, direction):
    ct = b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"'
    for message in (
        encrypted_mail().replace(ct, ct + field, 1),
        secure_join("vc-request").replace(
            b"Content-Type: text/plain", b"Content-Type: text/plain" + field, 1
        ),
    ):
        started = time.process_time()
        decision = decide(direction, Envelope(ALICE, ("relaxed@x.org",)), message, enforcing)
        assert decision.code in (250, 523, 550)  # decided, whichever way
        assert time.process_time() - started < 1  # bounded work, not a stall of seconds
