"""The MIME side of filtermail's decision: is a message one OpenPGP encrypted message? Pure.

RFC 3156 §4: an encrypted message is ``multipart/encrypted`` with
``protocol="application/pgp-encrypted"`` and exactly two parts: ``application/pgp-encrypted``
whose body is ``Version: 1``, then ``application/octet-stream`` holding the armored message,
which ``filtermail.openpgp`` checks. Besides that, only a Secure-Join request passes here
(Delta Chat's handshake message, sent before the peers have each other's keys): one text/plain
body that is nothing but its own Secure-Join header line.

Addresses come from the email package's header registry, which parses IP literals
(``user@[192.0.2.1]``); ``email.utils.parseaddr`` returns nothing for them on some Pythons.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

from .openpgp import NotEncrypted, check_armored_message

SECURE_JOIN_REQUESTS = ("vc-request", "vg-request")


def parse(data: bytes) -> EmailMessage:
    """The message in ``data`` (bytes as received, CRLF or LF line ends)."""
    return BytesParser(policy=policy.default).parsebytes(data)  # type: ignore[return-value]


def addresses(msg: Message, name: str) -> list[str]:
    """The lowercase addr-specs in header ``name`` (none if it is missing or unparseable)."""
    try:
        header = msg[name]
        found = [] if header is None else [a.addr_spec for a in header.addresses]
    except (AttributeError, IndexError, TypeError, ValueError):
        return []
    return [addr.lower() for addr in found if "@" in addr]


def _payload_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raise NotEncrypted(f"{part.get_content_type()} part has no body")
    try:
        return payload.decode("ascii")
    except UnicodeDecodeError:
        raise NotEncrypted(f"{part.get_content_type()} part is not ASCII") from None


def check_encrypted(msg: Message, *, outgoing: bool) -> None:
    """Raise NotEncrypted unless ``msg`` is one RFC 3156 encrypted message (see the module)."""
    if msg.get_content_type() != "multipart/encrypted":
        raise NotEncrypted(f"{msg.get_content_type()} is not multipart/encrypted")
    if msg.get_param("protocol") != "application/pgp-encrypted":
        raise NotEncrypted("multipart/encrypted without protocol application/pgp-encrypted")
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        raise NotEncrypted("multipart/encrypted must have exactly two parts")
    control, data = parts
    if control.get_content_type() != "application/pgp-encrypted":
        raise NotEncrypted("the first part is not application/pgp-encrypted")
    if _payload_text(control).strip() != "Version: 1":
        raise NotEncrypted("the application/pgp-encrypted part is not 'Version: 1'")
    if data.get_content_type() != "application/octet-stream":
        raise NotEncrypted("the second part is not application/octet-stream")
    check_armored_message(_payload_text(data), allow_headers=not outgoing)


def is_secure_join_request(msg: Message) -> bool:
    """Delta Chat's first handshake message: one text/plain body that is just its header line.

    The body may stand alone or be the only part of a multipart message (as Delta Chat sends
    it); either way it can say nothing but the request.
    """
    values = [str(value).strip().lower() for value in msg.get_all("Secure-Join") or []]
    if len(values) != 1 or values[0] not in SECURE_JOIN_REQUESTS:
        return False
    body = msg
    if msg.is_multipart():
        parts = msg.get_payload()
        if not isinstance(parts, list) or len(parts) != 1:
            return False
        body = parts[0]
    if body.is_multipart() or body.get_content_type() != "text/plain":
        return False
    try:
        text = _payload_text(body)
    except NotEncrypted:
        return False
    return text.strip().lower() == f"secure-join: {values[0]}"
