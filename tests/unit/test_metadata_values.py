"""metadata.values: the relay-wide values clients read with GETMETADATA on the server."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from chatmaild import config
from metadata.values import MAX_VALUE, file_value, iroh_relay, producers, turn_credentials


def serve_once(path: Path, answer: bytes) -> threading.Thread:
    """A TURN credentials service: writes ``answer`` to one connection and closes it."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_turn_credentials_come_from_the_socket(tmp_path):
    thread = serve_once(tmp_path / "turn.socket", b"user:secret\n")
    assert turn_credentials(tmp_path / "turn.socket") == "user:secret"
    thread.join(5)


def test_no_turn_socket_is_no_value_and_no_error(tmp_path, caplog):
    assert turn_credentials(tmp_path / "absent.socket") is None
    assert caplog.records == []


def test_a_turn_socket_nobody_listens_on_is_no_value_with_a_warning(tmp_path, caplog):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "turn.socket"))
    dead.close()  # the file stays, nobody listens
    assert turn_credentials(tmp_path / "turn.socket") is None
    assert "TURN credentials socket" in caplog.text


def test_file_values_are_served_as_they_are_and_oversized_ones_not(tmp_path):
    versions = tmp_path / "appversions"
    assert file_value(versions) is None
    versions.write_text('{"android": "2.0"}\n')
    assert file_value(versions) == '{"android": "2.0"}\n'
    versions.write_bytes(b"x" * (MAX_VALUE + 1))
    assert file_value(versions) is None


@pytest.fixture
def cfg(tmp_path) -> config.Config:
    ini = config.write_default("chat.example.org", tmp_path / "chatmail.ini")
    text = ini.read_text()
    text = text.replace("iroh_relay = https://iroh.chat.example.org", "iroh_relay =")
    for name, value in (
        ("turn_socket_path", tmp_path / "turn.socket"),
        ("app_versions_path", tmp_path / "appversions"),
    ):
        text = "\n".join(
            f"{name} = {value}" if line.startswith(f"{name} =") else line
            for line in text.splitlines()
        )
    ini.write_text(text + "\n")
    return config.load(ini)


def test_the_relays_values(cfg, tmp_path):
    values = producers(cfg)
    assert values["irohrelay"]() is None  # set empty
    assert values["maxsmtprecipients"]() == "1000"
    assert values["appversions"]() is None
    (tmp_path / "appversions").write_text("v1")
    assert values["appversions"]() == "v1"
    assert values["turn"]() is None
    thread = serve_once(tmp_path / "turn.socket", b"u:p")
    assert values["turn"]() == "chat.example.org:3478:u:p"
    thread.join(5)


@pytest.mark.parametrize(
    ("url", "offered"),
    [
        ("https://iroh.chat.example.org", "https://iroh.chat.example.org"),
        ("https://iroh.127.0.0.1", None),  # an IP-only relay's default: no such host
        ("https://iroh.127.0.0.1:8443/", None),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),  # set by the operator: kept
        ("https://iroh.example.net", "https://iroh.example.net"),
        ("", None),
        (None, None),
    ],
)
def test_iroh_relay_offered(url, offered):
    assert iroh_relay(url) == offered


def test_an_ip_only_relay_offers_no_iroh_relay_by_default(tmp_path):
    cfg = config.load(config.write_default("127.0.0.1", tmp_path / "chatmail.ini"))
    assert cfg.iroh_relay == "https://iroh.127.0.0.1"
    assert producers(cfg)["irohrelay"]() is None


def test_postfix_renders_the_recipient_limit_clients_are_told(cfg, tmp_path):
    from relay.render import Layout, Ports, RenderParams, render

    layout = Layout(tmp_path / "state")
    params = RenderParams(ports=Ports(imap=12345), vmail_uid=1234, bin_dir=Path("/x/bin"))
    render(cfg, layout, params)
    main_cf = (layout.postfix_dir / "main.cf").read_text()
    assert f"smtpd_recipient_limit = {producers(cfg)['maxsmtprecipients']()}\n" in main_cf
