"""What filtermail lets through: pure decisions, from the envelope, the message and mailbox facts.

The server asks three questions and sends the answer as its SMTP reply; nothing here reads a
socket, and the only thing read from disk is behind ``Mailboxes`` (a ``stat`` or two):

* ``recipient_refusal`` at RCPT TO: an address in the relay's own domain must name an account.
* ``decide`` after DATA. Outgoing mail (from the relay's users) passes if its From: is the
  envelope sender and it is encrypted (RFC 3156), a Secure-Join request, or an Autocrypt Setup
  Message to oneself. Incoming mail passes if it is encrypted (armor headers allowed), a
  Secure-Join request, a bounce from a mailer daemon, or addressed only to accounts that do
  not enforce encryption (no ``enforceE2EEincoming`` file). Everything else gets 523.
* The rate limit (``filtermail.ratelimit``) and the size limit are answered at MAIL FROM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatmaild.mailbox import ENFORCE_E2EE_FILE, PASSWORD_FILE, InvalidAddress, user_dir

from . import mime
from .openpgp import NotEncrypted

OUTGOING, INCOMING = "outgoing", "incoming"
DIRECTIONS = (OUTGOING, INCOMING)
ENCRYPTION_NEEDED = "Encryption Needed: Invalid Unencrypted Mail"  # what chatmail relays say


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    rcpts: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """An SMTP reply, and for the log what passed or why it was refused."""

    code: int
    text: str  # the reply after the code
    why: str  # for the log line: never message content
    keep_subject: bool = False  # the outgoing Subject: must stay (Autocrypt Setup Message)
    from_domain: str = ""  # the domain of the From: address, for DKIM

    @property
    def passes(self) -> bool:
        return self.code == 250

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


def _passed(why: str, **extra: object) -> Decision:
    return Decision(250, "2.0.0 OK", why, **extra)  # type: ignore[arg-type]


def _refused(why: str) -> Decision:
    return Decision(523, ENCRYPTION_NEEDED, why)


class Mailboxes:
    """The facts about accounts that decisions need: a ``stat`` or two in the mailboxes
    directory (filtermail's handler calls them on its event loop, see filtermail.handler)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, account: str) -> bool:
        return (user_dir(self.root, account) / PASSWORD_FILE).exists()

    def enforces_encryption(self, account: str) -> bool:
        try:
            return (user_dir(self.root, account) / ENFORCE_E2EE_FILE).exists()
        except InvalidAddress:  # no account of ours, so nothing to relax
            return True


def recipient_refusal(
    address: str, own_domain: str, exists: Callable[[str], bool]
) -> Decision | None:
    """A 550 for an address of our domain that names no account; None otherwise."""
    if address.rpartition("@")[2].lower() != own_domain.lower():
        return None
    reply = Decision(550, f"5.1.1 <{address}>: Recipient address rejected: no such user", "")
    try:
        if exists(address.lower()):
            return None
    except InvalidAddress as exc:
        return Decision(reply.code, reply.text, f"no such user: {exc}")
    return Decision(reply.code, reply.text, "no such user")


def decide(
    direction: str, envelope: Envelope, message: bytes, enforces: Callable[[str], bool]
) -> Decision:
    """Whether ``message`` may pass (see the module); ``enforces(rcpt)`` as in Mailboxes."""
    msg = mime.head(message)
    if direction == OUTGOING:
        return _outgoing(envelope, message, msg)
    return _incoming(envelope, message, msg, enforces)


def _single_from(msg) -> str | None:
    if len(msg.get_all("From") or ()) != 1:
        return None
    found = mime.addresses(msg, "From")
    return found[0] if len(found) == 1 else None


def _encrypted(message: bytes, msg, outgoing: bool) -> str | None:
    """None if ``message`` (whose ``mime.head`` is ``msg``) is encrypted, else why not."""
    try:
        mime.check_encrypted_bytes(message, outgoing=outgoing, headers=msg)
    except NotEncrypted as exc:
        return str(exc)
    return None


def _secure_join_request(message: bytes, msg) -> bool:
    # only a message that says it is one is parsed whole
    if not msg.get_all("Secure-Join"):
        return False
    try:
        return mime.is_secure_join_request(mime.parse(message))
    except NotEncrypted:  # a MIME structure too hostile to parse
        return False


def _outgoing(envelope: Envelope, message: bytes, msg) -> Decision:
    sender = _single_from(msg)
    if sender is None:
        return Decision(550, "5.7.1 From: must hold exactly one address", "no single From")
    if sender != envelope.mail_from.lower():
        return Decision(
            550, "5.7.1 From: header does not match the envelope sender", "From mismatch"
        )
    why_not = _encrypted(message, msg, outgoing=True)
    if why_not is None:
        return _passed("encrypted")
    if _secure_join_request(message, msg):
        return _passed("secure-join request")
    if mime.is_autocrypt_setup_message(msg, envelope.mail_from, envelope.rcpts):
        return _passed("autocrypt setup message", keep_subject=True)
    return _refused(f"unencrypted: {why_not}")


def _incoming(envelope: Envelope, message: bytes, msg, enforces: Callable[[str], bool]) -> Decision:
    sender = _single_from(msg)
    from_domain = "" if sender is None else sender.rpartition("@")[2]
    why_not = _encrypted(message, msg, outgoing=False)
    if why_not is None:
        return _passed("encrypted", from_domain=from_domain)
    if _secure_join_request(message, msg):
        return _passed("secure-join request", from_domain=from_domain)
    if mime.is_bounce(msg):
        return _passed("bounce", from_domain=from_domain)
    if envelope.rcpts and not any(enforces(rcpt) for rcpt in envelope.rcpts):
        return _passed("unencrypted to accounts that allow it", from_domain=from_domain)
    return _refused(f"unencrypted: {why_not}")
