"""filtermail outgoing, over the wire: a real filtermail process between smtplib (in Postfix's
place) and an aiosmtpd sink (in the reinjection listener's place)."""

from __future__ import annotations

import smtplib
import subprocess

import pytest
from filtermails import IP_DOMAIN, start_filtermail
from helpers_env import require_binary
from mails import armored, encrypted, plain, setup_message

MAX_SIZE = 2 * 1024 * 1024
BURST = 3
SYMMETRIC = ("--passphrase", "pw", "--armor", "--symmetric")
ENCRYPTION_NEEDED = (523, b"Encryption Needed: Invalid Unencrypted Mail")


@pytest.fixture(scope="module")
def outgoing(tmp_path_factory, sink):
    extra = f"max_message_size = {MAX_SIZE}\nmax_user_send_burst_size = {BURST}\n"
    filtermail = start_filtermail(tmp_path_factory.mktemp("fm"), "outgoing", sink.port, extra)
    filtermail.add_account(f"known@{IP_DOMAIN}")
    yield filtermail
    assert filtermail.stop() == 0


@pytest.fixture(autouse=True)
def _empty_sink(sink):
    sink.arrived.clear()
    sink.handler.refuse.clear()
    sink.handler.pipelining = False


def sender(name: str) -> str:
    """A sender of its own per test: the rate limit counts per sender."""
    return f"{name}@{IP_DOMAIN}"


def send(filtermail, mail_from: str, rcpts: list[str], message: bytes, **kwargs):
    with filtermail.client() as client:
        return client.sendmail(mail_from, rcpts, message, **kwargs)


@pytest.mark.parametrize("pipelining", [False, True])
def test_encrypted_mail_arrives_without_received_and_subject(outgoing, sink, pipelining):
    sink.handler.pipelining = pipelining
    alice = sender(f"alice{pipelining}")
    message = encrypted(alice, "bob@example.org", subject="secret plans")
    assert send(outgoing, alice, ["bob@example.org"], message) == {}
    (arrived,) = sink.arrived
    assert (arrived.mail_from, arrived.rcpts) == (alice, ["bob@example.org"])
    expected = message.split(b"\r\n", 1)[1].replace(b"Subject: secret plans", b"Subject: [...]")
    assert arrived.content == expected
    # accepted mail is Postfix's to log (with its queue id): no line at info level here
    assert alice not in outgoing.log_text() and " 250" not in outgoing.log_text()


def test_gnupg_encrypted_mail_passes(outgoing, sink, tmp_path):
    gpg = require_binary("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    armor = subprocess.run(
        [gpg, "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", *SYMMETRIC],
        input=b"hello",
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    alice = sender("gnupg")
    message = encrypted(alice, "bob@example.org", armor=armor.replace("\n", "\r\n"), received="")
    send(outgoing, alice, ["bob@example.org"], message)
    assert [a.content for a in sink.arrived] == [message]


def test_plaintext_is_refused_and_not_reinjected(outgoing, sink):
    alice = sender("plain")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(outgoing, alice, ["bob@example.org"], plain(alice, "bob@example.org"))
    assert (refused.value.smtp_code, refused.value.smtp_error) == ENCRYPTION_NEEDED
    assert sink.arrived == []
    assert f"outgoing 523 from {alice}: unencrypted" in outgoing.log_text()


def test_from_must_be_the_envelope_sender(outgoing, sink):
    message = encrypted("mallory@example.org", "bob@example.org")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(outgoing, sender("spoofer"), ["bob@example.org"], message)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    assert sink.arrived == []


def test_setup_message_to_oneself_keeps_its_subject(outgoing, sink):
    alice = sender("setup")
    outgoing.add_account(alice)
    message = setup_message(alice)
    send(outgoing, alice, [alice], message)
    assert [a.content for a in sink.arrived] == [message]
    with pytest.raises(smtplib.SMTPDataError):
        send(outgoing, alice, ["bob@example.org"], message)


def test_a_burst_passes_and_the_next_message_waits(outgoing, sink):
    alice = sender("burst")
    message = encrypted(alice, "bob@example.org")
    for _ in range(BURST):
        send(outgoing, alice, ["bob@example.org"], message)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(outgoing, alice, ["bob@example.org"], message)
    assert refused.value.smtp_code == 450
    assert refused.value.smtp_error.startswith(b"4.7.1 ")
    assert len(sink.arrived) == BURST
    assert f"outgoing 450: {alice} over the rate limit" in outgoing.log_text()


@pytest.mark.parametrize(
    "rcpt", [f"nobody@{IP_DOMAIN}", f"../x@{IP_DOMAIN}", f"NoBody@{IP_DOMAIN}"]
)
def test_unknown_local_recipients_are_refused_at_rcpt(outgoing, rcpt):
    with outgoing.client() as client:
        client.ehlo()
        assert client.mail(sender("rcpt"))[0] == 250
        code, text = client.rcpt(rcpt)
        assert (code, text) == (
            550,
            f"5.1.1 <{rcpt}>: Recipient address rejected: no such user".encode(),
        )
        assert client.rcpt(f"known@{IP_DOMAIN}")[0] == 250
        assert client.rcpt(f"Known@{IP_DOMAIN}")[0] == 250


def test_every_esmtp_parameter_is_accepted_and_8bitmime_passed_on(outgoing, sink):
    alice = sender("params")
    message = encrypted(alice, f"known@{IP_DOMAIN}")
    with outgoing.client() as client:
        client.ehlo()
        mail_options = ["SIZE=5000", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=QQ314159"]
        assert client.mail(alice, mail_options)[0] == 250
        rcpt_options = ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;known@{IP_DOMAIN}", "X-NEW=1"]
        assert client.rcpt(f"known@{IP_DOMAIN}", rcpt_options)[0] == 250
        assert client.data(message)[0] == 250
    (arrived,) = sink.arrived
    assert set(arrived.options) == {"BODY=8BITMIME", "SMTPUTF8"}


def test_announced_size_over_the_limit_is_refused_at_mail(outgoing):
    with outgoing.client() as client:
        client.ehlo()
        assert client.has_extn("size") and int(client.esmtp_features["size"]) == MAX_SIZE
        code, text = client.mail(sender("big"), [f"SIZE={MAX_SIZE + 1}"])
        assert code == 552 and text.startswith(b"5.3.4 ")


def test_oversized_data_is_refused_and_the_connection_goes_on(outgoing, sink):
    alice = sender("huge")
    message = encrypted(alice, "bob@example.org", armor=armored(MAX_SIZE, crc=False))
    with outgoing.client() as client:
        client.ehlo()
        client.mail(alice)
        client.rcpt("bob@example.org")
        code, text = client.data(message)
        assert code == 552 and text.startswith(b"5.3.4 ")
        assert client.noop()[0] == 250
    assert sink.arrived == []


def test_a_large_message_is_streamed_through_unchanged(outgoing, sink):
    alice = sender("large")
    message = encrypted(alice, "bob@example.org", armor=armored(800_000, crc=False), received="")
    send(outgoing, alice, ["bob@example.org"], message)
    assert [a.content for a in sink.arrived] == [message]


def test_dot_lines_survive(outgoing, sink):
    alice = sender("dots")
    message = encrypted(alice, "bob@example.org", received="").replace(
        b"Chat-Version: 1.0\r\n", b"Chat-Version: 1.0\r\n.X-Dot: 1\r\n"
    )
    message = message.replace(b"--b1--\r\n", b"--b1--\r\n.\r\n..\r\n.epilogue\r\n")
    send(outgoing, alice, ["bob@example.org"], message)
    assert [a.content for a in sink.arrived] == [message]


def test_garbage_is_refused_and_the_server_keeps_serving(outgoing, sink):
    alice = sender("garbage")
    garbage = b"From: <" + alice.encode() + b">\r\n\xff\xfe\x00 no MIME\r\n--\r\n" * 50
    with outgoing.client() as client:
        client.ehlo()
        client.mail(alice)
        client.rcpt("bob@example.org")
        assert client.data(garbage)[0] == 523
        client.mail(alice)
        client.rcpt("bob@example.org")
        assert client.data(encrypted(alice, "bob@example.org"))[0] == 250
    assert len(sink.arrived) == 1


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (b"MAIL FROM:<a\x00b@[127.0.0.1]>", 501),
        (b"MAIL FROM:<a@b", 501),
        (b"MAIL FROM:<" + b"a" * 3000 + b"@x.org>", 500),
        (b"RCPT TO:<x@y.org>", 503),
        (b"DATA", 503),
        (b"VRFY x@y", 252),
        (b"X" * 100_000, 500),
    ],
)
def test_hostile_commands_get_clear_codes(outgoing, command, code):
    with outgoing.client() as client:
        client.ehlo()
        client.send(command + b"\r\n")
        assert client.getreply()[0] == code
        assert client.noop()[0] == 250


@pytest.mark.parametrize("pipelining", [False, True])
def test_reinjection_refusals_are_relayed_and_nothing_else_says_250(outgoing, sink, pipelining):
    sink.handler.pipelining = pipelining
    alice = sender(f"refused{pipelining}")
    message = encrypted(alice, "bob@example.org")
    for stage, reply, error in [
        ("RCPT", "550 5.1.1 no such mailbox", smtplib.SMTPDataError),
        ("MAIL", "451 4.3.0 busy", smtplib.SMTPDataError),
        ("DATA", "554 5.7.1 go away", smtplib.SMTPDataError),
    ]:
        sink.handler.refuse = {stage: reply}
        with pytest.raises(error) as refused:
            send(outgoing, alice, ["bob@example.org"], message)
        assert f"{refused.value.smtp_code} {refused.value.smtp_error.decode()}" == reply
    assert sink.arrived == []
