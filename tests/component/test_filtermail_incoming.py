"""filtermail incoming, over the wire: mail from other servers reaches the relay's accounts
unchanged if encrypted, or if every recipient accepts unencrypted mail."""

from __future__ import annotations

import smtplib

import pytest
from filtermails import IP_DOMAIN, start_filtermail
from mails import bounce, encrypted, plain

STRICT = f"strict@{IP_DOMAIN}"
RELAXED = f"relaxed@{IP_DOMAIN}"
RELAXED2 = f"relaxed2@{IP_DOMAIN}"


@pytest.fixture(scope="module")
def incoming(tmp_path_factory, sink):
    filtermail = start_filtermail(tmp_path_factory.mktemp("fm"), "incoming", sink.port)
    filtermail.add_account(STRICT)
    filtermail.add_account(RELAXED, enforce=False)
    filtermail.add_account(RELAXED2, enforce=False)
    yield filtermail
    assert filtermail.stop() == 0


@pytest.fixture(autouse=True)
def _empty_sink(sink):
    sink.arrived.clear()


def send(filtermail, mail_from: str, rcpts: list[str], message: bytes):
    with filtermail.client() as client:
        return client.sendmail(mail_from, rcpts, message)


def test_encrypted_mail_arrives_byte_for_byte(incoming, sink):
    message = encrypted("carol@example.org", STRICT, subject="kept as it is")
    send(incoming, "carol@example.org", [STRICT], message)
    (arrived,) = sink.arrived
    assert (arrived.mail_from, arrived.rcpts, arrived.content) == (
        "carol@example.org",
        [STRICT],
        message,
    )


@pytest.mark.parametrize(
    ("rcpts", "passes"),
    [
        ([STRICT], False),
        ([RELAXED], True),
        ([RELAXED, RELAXED2], True),
        ([RELAXED, STRICT], False),
    ],
)
def test_plaintext_passes_only_if_every_recipient_allows_it(incoming, sink, rcpts, passes):
    message = plain("carol@example.org", rcpts[0])
    if passes:
        send(incoming, "carol@example.org", rcpts, message)
        assert [a.content for a in sink.arrived] == [message]
        return
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(incoming, "carol@example.org", rcpts, message)
    assert refused.value.smtp_code == 523
    assert sink.arrived == []
    assert "incoming 523: unencrypted" in incoming.log_text()
    assert "carol" not in incoming.log_text()


def test_bounces_with_the_null_sender_pass(incoming, sink):
    message = bounce(STRICT)
    with incoming.client() as client:
        client.ehlo()
        assert client.mail("<>")[0] == 250
        assert client.rcpt(STRICT)[0] == 250
        assert client.data(message)[0] == 250
    (arrived,) = sink.arrived
    assert (arrived.mail_from, arrived.content) == ("", message)


def test_unknown_local_recipients_are_refused(incoming):
    with incoming.client() as client:
        client.ehlo()
        client.mail("carol@example.org")
        assert client.rcpt(f"nobody@{IP_DOMAIN}")[0] == 550
        assert client.rcpt(f"../{STRICT}")[0] == 550
        assert client.rcpt(STRICT)[0] == 250
