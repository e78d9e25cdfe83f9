"""relay.ports: who holds a port, seen without connecting to it."""

from __future__ import annotations

import os
import socket

import pytest
from helpers_env import free_port

from relay import ports


def test_a_listening_port_is_seen_with_its_holder_and_a_closed_one_is_not():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert ports.listening(port)
        if os.geteuid() == 0:  # other users may not see which process holds a socket
            assert ports.holder(port).endswith(f"(pid {os.getpid()})")
    assert not ports.listening(port)


def test_check_free_names_the_port_and_refuses_one_given_twice():
    port = free_port()
    ports.check_free({"smtp": ("127.0.0.1", port)})  # free: no error
    with pytest.raises(ports.PortInUse, match=f"port {port} is set for both smtp and imap"):
        ports.check_free({"smtp": ("127.0.0.1", port), "imap": ("127.0.0.1", port)})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        with pytest.raises(ports.PortInUse, match=f"port {port} \\(smtp\\) on 127.0.0.1 is in use"):
            ports.check_free({"smtp": ("127.0.0.1", port)})
