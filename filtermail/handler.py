"""filtermail's SMTP hooks (``filtermail.smtpserver`` calls them): each verb wired to its decision.

MAIL FROM: the size the client announces, then (outgoing) the sender's rate limit. RCPT TO: an
address of the relay's domain must name an account (two ``stat`` calls in the mailboxes
directory, made on the event loop: about 16 µs with the directory in the dentry cache, as it
is on a relay whose Dovecot serves those accounts, against about 250 µs of CPU for handing them
to a thread, a third of an incoming message's cost; Postfix asks for every incoming message).
DATA: ``filtermail.policy.decide`` on the message, the outgoing header rewrite
(``filtermail.privacy``) and DKIM, then the reinjection, whose reply is the answer. Decisions
on messages above the spool's memory threshold run in a small thread pool, so a large message
never stalls the event loop, and only that many are held in memory at once.

Logs name no client IP (the peer is Postfix on loopback anyway) and no message content; the
envelope sender only where an operator can act on it (an outgoing refusal is about one of the
relay's own accounts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import policy, privacy
from .policy import INCOMING, OUTGOING, Decision, Envelope, Mailboxes
from .ratelimit import RateLimiter
from .reinject import Reinjector, transaction
from .smtpserver import FilterEnvelope
from .spool import Spool
from .wire import stuff, unstuff

if TYPE_CHECKING:
    from .server import Settings

log = logging.getLogger(__name__)

INTERNAL_ERROR = "451 4.3.0 Internal error, try again later"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
RATE_LIMITED = "450 4.7.1 Too many messages sent, slow down and try again later"
HEAVY_AT_ONCE = 2  # large messages held in memory for checking at the same time
RELEASE_AFTER = 1.0  # seconds without a large message before their memory goes back


class Signer(Protocol):  # filtermail.dkim.Signer
    def sign(self, message: bytes) -> bytes: ...


class Verifier(Protocol):  # filtermail.dkim.Verifier, whose verdict has ok, code and reason
    async def verify(self, message: bytes, from_domain: str) -> Any: ...


@dataclass(frozen=True)
class Outcome:
    """A decision, and how to send the message on if it passes."""

    decision: Decision
    head: bytes = b""  # dot-stuffed bytes sent first, instead of the spool up to body_offset
    body_offset: int = 0
    message: bytes | None = None  # the message itself, kept for DKIM verification


class Filter:
    """The server's hooks (named as aiosmtpd names them); each returns its reply line."""

    def __init__(
        self,
        settings: Settings,
        reinjector: Reinjector,
        executor: Executor,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.settings = settings
        self.reinjector = reinjector
        self.executor = executor
        self.signer, self.verifier = signer, verifier
        self.mailboxes = Mailboxes(settings.mailboxes_dir)
        self.limiter = RateLimiter(
            settings.max_user_send_per_minute, settings.max_user_send_burst_size
        )
        self.heavy = asyncio.Semaphore(HEAVY_AT_ONCE)
        # called in the executor once large messages stop coming (filtermail.memory)
        self.release_memory: Callable[[], object] | None = None
        self._heavy_seen = 0  # large messages checked so far
        self.in_flight = 0  # DATA being handled: a stop waits for these

    async def handle_MAIL(self, envelope: FilterEnvelope, address: str, options: list[str]) -> str:
        size = next((o[5:] for o in options if o[:5].upper() == "SIZE="), None)
        if size is not None and not size.isdigit():
            return "501 5.5.4 Syntax: SIZE=<number>"
        if size is not None and int(size) > self.settings.max_message_size:
            log.warning("%s 552: announced size %s over the limit", self.direction, size)
            return TOO_BIG
        if self.direction == OUTGOING and not self.limiter.allow(address.lower()):
            log.warning("outgoing 450: %s over the rate limit", address)
            return RATE_LIMITED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, envelope: FilterEnvelope, address: str, options: list[str]) -> str:
        own = address.rpartition("@")[2].lower() == self.settings.addr_domain.lower()
        refusal, enforces = None, True
        if own:  # stats in the mailboxes directory, on the loop (see the module docstring)
            refusal, enforces = self._recipient(address)
        if refusal is not None:
            log.warning("%s 550: %s", self.direction, refusal.why)
            return refusal.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        envelope.enforcing[address.lower()] = enforces
        return "250 2.1.5 OK"

    def _recipient(self, address: str) -> tuple[Decision | None, bool]:
        refusal = policy.recipient_refusal(
            address, self.settings.addr_domain, self.mailboxes.exists
        )
        if refusal is not None or self.direction == OUTGOING:
            return refusal, True
        return None, self.mailboxes.enforces_encryption(address.lower())

    async def handle_DATA(self, envelope: FilterEnvelope) -> str:
        spool = envelope.spool
        assert spool is not None
        if envelope.data_size > self.settings.max_message_size:
            log.warning("%s 552: %d bytes over the limit", self.direction, envelope.data_size)
            return TOO_BIG
        self.in_flight += 1
        try:
            return await self._pass_on(envelope, spool)
        finally:
            self.in_flight -= 1

    async def _pass_on(self, envelope: FilterEnvelope, spool: Spool) -> str:
        env = Envelope(envelope.mail_from or "", tuple(envelope.rcpt_tos))
        if spool.in_memory:
            outcome = self.evaluate(env, spool.read(), envelope.enforcing)
            refusal = await self._verify(outcome)
        else:
            async with self.heavy:  # at most this many large messages in memory at once
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(
                    self.executor, self._evaluate_spool, env, spool, envelope.enforcing
                )
                refusal = await self._verify(outcome)
            self._after_heavy()
        decision = outcome.decision
        if refusal is not None or not decision.passes:
            reply = refusal or decision.reply
            self._log(reply, decision.why if refusal is None else "DKIM", env)
            return reply
        pieces = _chain(outcome.head, spool.pieces(outcome.body_offset, asyncio.to_thread))
        tx = transaction(env.mail_from, env.rcpts, envelope.mail_options)
        reply = await self.reinjector.send(tx, pieces)
        why = decision.why if reply.ok else f"{decision.why}, reinjection said {reply.line!r}"
        self._log(reply.line, why, env, spool.size)
        return reply.line

    def _after_heavy(self) -> None:
        if self.release_memory is None:
            return
        self._heavy_seen += 1
        loop = asyncio.get_running_loop()
        loop.call_later(RELEASE_AFTER, self._release_if_quiet, self._heavy_seen)

    def _release_if_quiet(self, seen: int) -> None:
        if seen == self._heavy_seen and self.release_memory is not None:  # none came since
            asyncio.get_running_loop().run_in_executor(self.executor, self.release_memory)

    def _evaluate_spool(self, env: Envelope, spool: Spool, enforcing: dict[str, bool]) -> Outcome:
        return self.evaluate(env, spool.read(), enforcing)

    def evaluate(self, env: Envelope, wire: bytes, enforcing: dict[str, bool]) -> Outcome:
        """The decision on dot-stuffed ``wire`` data, and what to send instead of its head."""
        message = unstuff(wire)
        decision = policy.decide(
            self.direction, env, message, lambda rcpt: enforcing.get(rcpt.lower(), True)
        )
        if not decision.passes:
            return Outcome(decision)
        if self.direction == INCOMING:
            return Outcome(decision, message=message if self.verifier is not None else None)
        end = privacy.head_end(wire)
        head = privacy.rewrite_head(unstuff(wire[:end]), keep_subject=decision.keep_subject)
        if self.signer is not None and env.mail_from.rpartition("@")[2].lower() == (
            self.settings.mail_domain
        ):
            signature = self.signer.sign(head + message[privacy.head_end(message) :])
            head = signature + head
        return Outcome(decision, stuff(head), end)

    async def _verify(self, outcome: Outcome) -> str | None:
        """A refusal if DKIM verification is on and fails (after the encryption check passed:
        plaintext is refused without a DNS lookup)."""
        if self.verifier is None or outcome.message is None or not outcome.decision.passes:
            return None
        verdict = await self.verifier.verify(outcome.message, outcome.decision.from_domain)
        return None if verdict.ok else f"{verdict.code} {verdict.reason}"

    async def handle_exception(self, error: Exception) -> str:
        # an internal failure is temporary for the client, and its detail stays in the log
        log.error("internal error (%s), answered 451", type(error).__name__)
        return INTERNAL_ERROR

    @property
    def direction(self) -> str:
        return self.settings.direction

    def _log(self, reply: str, why: str, env: Envelope, size: int = 0) -> None:
        if reply.startswith("2"):  # Postfix logs each accepted message with its queue id
            log.debug("%s %s: %s, %d bytes", self.direction, reply[:3], why, size)
            return
        sender = f" from {env.mail_from}" if self.direction == OUTGOING else ""
        log.warning("%s %s%s: %s", self.direction, reply[:3], sender, why)


async def _chain(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for piece in rest:
        yield piece
