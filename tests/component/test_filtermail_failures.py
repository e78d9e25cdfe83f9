"""filtermail when things go wrong: no reinjection listener, an internal error, a stop."""

from __future__ import annotations

import asyncio
import smtplib
import threading

import pytest
from filtermails import IP_DOMAIN, Sink, start_filtermail
from helpers_env import free_port
from mails import encrypted

from filtermail.policy import INCOMING
from filtermail.server import Ports, Settings, serve


def test_without_a_reinjection_listener_mail_is_deferred(tmp_path):
    filtermail = start_filtermail(tmp_path, "outgoing", free_port())  # nothing listens there
    try:
        alice = f"alice@{IP_DOMAIN}"
        with filtermail.client() as client, pytest.raises(smtplib.SMTPDataError) as deferred:
            client.sendmail(alice, ["bob@example.org"], encrypted(alice, "bob@example.org"))
        assert deferred.value.smtp_code == 451
        assert deferred.value.smtp_error.startswith(b"4.3.0 ")
        assert "reinjection to 127.0.0.1:" in filtermail.log_text()
    finally:
        assert filtermail.stop() == 0


def test_a_listener_that_goes_away_and_comes_back(tmp_path):
    sink = Sink()
    filtermail = start_filtermail(tmp_path, "incoming", sink.port)
    filtermail.add_account(f"bob@{IP_DOMAIN}")
    message = encrypted("carol@example.org", f"bob@{IP_DOMAIN}")

    def send() -> None:
        with filtermail.client() as client:
            client.sendmail("carol@example.org", [f"bob@{IP_DOMAIN}"], message)

    try:
        send()  # leaves a kept connection to the listener
        sink.stop()
        sink = Sink(sink.port)  # a restarted Postfix: the kept connection is dead
        send()  # one new connection, the message once
        assert len(sink.arrived) == 1
        sink.stop()
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            send()
        assert deferred.value.smtp_code == 451
    finally:
        sink.stop()
        assert filtermail.stop() == 0


class Exploding:
    """A DKIM verifier that fails inside handle_DATA: stands in for any internal error."""

    async def verify(self, message: bytes, from_domain: str):
        raise RuntimeError("secret detail")


def test_internal_errors_are_451_not_aiosmtpds_500(tmp_path, caplog):
    (tmp_path / "mail" / f"bob@{IP_DOMAIN}").mkdir(parents=True)
    (tmp_path / "mail" / f"bob@{IP_DOMAIN}" / "password").write_text("x")
    settings = Settings(INCOMING, "127.0.0.1", IP_DOMAIN, tmp_path / "mail", 10**6, 60, 10)
    ports = Ports("127.0.0.1", free_port(), free_port())
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(settings, ports, None, Exploding(), stop),)
    )
    thread.start()
    try:
        for _ in range(200):
            try:
                client = smtplib.SMTP("127.0.0.1", ports.port, timeout=10)
                break
            except OSError:
                threading.Event().wait(0.02)
        with client:
            message = encrypted("carol@example.org", f"bob@{IP_DOMAIN}")
            with pytest.raises(smtplib.SMTPDataError) as deferred:
                client.sendmail("carol@example.org", [f"bob@{IP_DOMAIN}"], message)
            assert deferred.value.smtp_code == 451
            assert deferred.value.smtp_error == b"4.3.0 Internal error, try again later"
            assert client.noop()[0] == 250
        assert "internal error (RuntimeError), answered 451" in caplog.text
        assert "secret detail" not in caplog.text
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
