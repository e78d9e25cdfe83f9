"""Shared fixtures. Helpers live in helpers_env.py, daemons.py, relays.py, dictclient.py and
dnsserver.py.

Integration tests need Debian's Dovecot and supervisor and root. Outside CI a missing piece skips
the test with the reason; with CI=true it is a failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import pytest
from daemons import restore_modes, start_daemon, user_problem
from dnsserver import DnsServer
from helpers_env import IN_CI, free_port, require, require_binary, require_root  # noqa: F401
from hypothesis import settings

# Hypothesis fails an example that runs over 200 ms by default: a wall-clock assertion, which
# the tests do not make (how fast things run is measured in bench/).
settings.register_profile("chatmaild", deadline=None)
settings.load_profile("chatmaild")


@pytest.fixture(scope="session", autouse=True)
def _close_temp_dirs_again():
    yield
    restore_modes()


@pytest.fixture
def vmail() -> str:
    """The unix user daemons run as in production; needs root and a tree vmail can read."""
    problem = user_problem("vmail")
    require(problem is None, f"daemon as vmail: {problem}")
    return "vmail"


@pytest.fixture(params=["root", "vmail"])
def daemon_user(request) -> str | None:
    """Who runs a daemon: this test process (root in CI), or vmail as in production."""
    return None if request.param == "root" else request.getfixturevalue("vmail")


@pytest.fixture
def doveauth(tmp_path, daemon_user):
    daemon = start_daemon("doveauth", tmp_path, user=daemon_user)
    yield daemon
    daemon.stop()


@pytest.fixture
def lastlogin(tmp_path, daemon_user):
    daemon = start_daemon("doveauth.lastlogin", tmp_path, user=daemon_user)
    yield daemon
    daemon.stop()


@pytest.fixture
def dns_server(tmp_path):
    """dnsmasq on a free loopback port (dnsserver.py), at first with no records: ``.address`` is
    its (host, port); ``.start(txt={name: text})`` restarts it serving those TXT records."""
    server = DnsServer(require_binary("dnsmasq"), tmp_path / "dnsmasq.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def relay():
    from relays import start_relay, stop_relay

    running = start_relay()
    yield running
    stop_relay(running)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    """A DKIM key of example.org (dkimmail.py), made by Debian's openssl."""
    from dkimmail import make_key

    return make_key(tmp_path_factory.mktemp("dkim"))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    """Another DKIM key for the same name: a signature made with it does not verify."""
    from dkimmail import make_key

    return make_key(tmp_path_factory.mktemp("dkim-other"))


@pytest.fixture(scope="module")
def sink():
    """An SMTP server playing Postfix's reinjection listener for filtermail (filtermails.py)."""
    from filtermails import Sink

    sink = Sink()
    yield sink
    sink.stop()
