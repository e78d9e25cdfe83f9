"""filtermail.dkim.Verifier against a real DNS server: dnsmasq on loopback (tests/dnsserver.py).

The records served are the lines generate_key prints, split into 255-character strings as a zone
file holds them, so what an operator publishes is what is tested.
"""

from __future__ import annotations

import asyncio
import socket
import time

import dns.message
import dns.query
import pytest
from dkimmail import DOMAIN, KEY_NAME, SELECTOR, chat_message, sized_message
from dnsserver import DnsServer
from helpers_env import require_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from filtermail.dkim import Signer, Verdict, Verifier

TIMEOUT = 1.0
LOOKUP_FAILED = Verdict(False, 451, "4.7.5 DKIM key lookup failed, try again later")


@pytest.fixture(scope="module")
def signed(key) -> bytes:
    message = chat_message()
    return Signer(DOMAIN, SELECTOR, key.path).sign(message) + message


@pytest.fixture(scope="module")
def key_server(tmp_path_factory, key):
    """dnsmasq publishing ``key`` as generate_key printed it, for the whole module."""
    server = DnsServer(require_binary("dnsmasq"), tmp_path_factory.mktemp("dns") / "dnsmasq.log")
    yield server.start(txt={KEY_NAME: key.strings})
    server.stop()


def verify(address, message: bytes, from_domain: str = DOMAIN) -> Verdict:
    return asyncio.run(Verifier(address, TIMEOUT).verify(message, from_domain))


def test_dns_server_serves_long_txt_records_and_restarts_with_new_ones(dns_server, key):
    dns_server.start(txt={KEY_NAME: key.strings})
    address = dns_server.address
    query = dns.message.make_query(KEY_NAME, "TXT")
    answer = dns.query.udp(query, address[0], port=address[1], timeout=2)
    (rdata,) = answer.answer[0]
    assert [len(s) for s in rdata.strings] == [len(s) for s in key.strings]
    assert b"".join(rdata.strings) == key.value
    dns_server.start(txt={"other.example.org": "x" * 600})
    assert dns_server.address == address
    query = dns.message.make_query("other.example.org", "TXT", use_edns=0, payload=1232)
    answer = dns.query.udp(query, address[0], port=address[1], timeout=2)
    assert [len(s) for s in next(iter(answer.answer[0])).strings] == [255, 255, 90]


def test_signed_message_verifies_with_the_published_key(key_server, signed):
    assert verify(key_server.address, signed).ok
    assert verify(key_server.address, signed, "Example.ORG").ok


def test_large_signed_message_verifies(key_server, key):
    message = sized_message(1 << 20)
    signed = Signer(DOMAIN, SELECTOR, key.path).sign(message) + message
    assert verify(key_server.address, signed).ok


def test_changed_message_does_not_verify(key_server, signed):
    verdict = verify(key_server.address, signed.replace(b"Subject: [...]", b"Subject: hi"))
    assert verdict == Verdict(False, 550, f"5.7.1 DKIM signature of {DOMAIN} does not verify")


def test_wrong_published_key_does_not_verify(dns_server, other_key, signed):
    dns_server.start(txt={KEY_NAME: other_key.strings})
    verdict = verify(dns_server.address, signed)
    assert verdict == Verdict(False, 550, f"5.7.1 DKIM signature of {DOMAIN} does not verify")


def test_other_from_domain_is_refused_without_a_lookup(dns_server, signed):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # would time out if asked
    with silent:
        silent.bind(("127.0.0.1", 0))
        verdict = verify(silent.getsockname(), signed, "example.net")
    assert verdict == Verdict(False, 550, "5.7.1 No DKIM signature of example.net")


@pytest.mark.parametrize("hosts", [{}, {KEY_NAME: "192.0.2.1"}], ids=["nxdomain", "no-txt"])
def test_unpublished_key_is_refused(dns_server, signed, hosts):
    dns_server.start(txt={"unrelated.example.org": "v=DKIM1; p="}, hosts=hosts)
    verdict = verify(dns_server.address, signed)
    assert verdict == Verdict(False, 550, f"5.7.1 No DKIM key for {KEY_NAME}")


def test_refused_lookup_is_deferred(dns_server, signed):
    dns_server.start(refuse_others=True)
    assert verify(dns_server.address, signed) == LOOKUP_FAILED


def test_silent_resolver_is_deferred_within_the_timeout(signed):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes queries, never answers
    with silent:
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        verdict = verify(silent.getsockname(), signed)
        elapsed = time.monotonic() - started
    assert verdict == LOOKUP_FAILED
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 1.0


def test_closed_port_is_deferred(signed):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()
    assert verify(address, signed) == LOOKUP_FAILED


@settings(max_examples=40)
@given(data=st.data())
def test_verify_through_dns_never_raises(key_server, signed, data):
    damaged = bytearray(signed)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    verdict = verify(key_server.address, bytes(damaged))
    assert verdict.code in (250, 550)


def test_dns_server_reports_a_dnsmasq_that_does_not_start(tmp_path):
    server = DnsServer("/bin/false", tmp_path / "dnsmasq.log")
    with pytest.raises(RuntimeError, match="dnsmasq did not start"):
        server.start()
    assert server.proc is None


def test_dns_server_refuses_records_dnsmasq_would_split(dns_server):
    with pytest.raises(ValueError, match="cannot serve"):
        dns_server.start(txt={KEY_NAME: "v=DKIM1, p=x"})
