"""Shared fixtures. Helpers live in helpers_env.py, daemons.py, relays.py and dictclient.py.

Integration tests need Debian's Dovecot and supervisor and root. Outside CI a missing piece skips
the test with the reason; with CI=true it is a failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import pytest
from daemons import start_daemon
from helpers_env import IN_CI, free_port, require, require_binary, require_root  # noqa: F401
from hypothesis import settings

# Hypothesis fails an example that runs over 200 ms by default: a wall-clock assertion, which
# the tests do not make (how fast things run is measured in bench/).
settings.register_profile("chatmaild", deadline=None)
settings.load_profile("chatmaild")


@pytest.fixture
def doveauth(tmp_path):
    daemon = start_daemon("doveauth", tmp_path)
    yield daemon
    daemon.stop()


@pytest.fixture
def lastlogin(tmp_path):
    daemon = start_daemon("doveauth.lastlogin", tmp_path)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def relay():
    from relays import start_relay, stop_relay

    running = start_relay()
    yield running
    stop_relay(running)
