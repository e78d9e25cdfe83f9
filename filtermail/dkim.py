"""DKIM in filtermail: sign outgoing mail, and refuse incoming mail its From: domain did not sign.

filtermail (the vmail user, on its loopback SMTP ports) uses this module. It reads the private
key at chatmail.ini's ``dkim_key_path`` once, when it starts, writes no files, and asks the
resolver of ``dkim_dns_resolver`` (or /etc/resolv.conf's) for ``<s>._domainkey.<d>`` TXT records.

Incoming mail passes only with a valid signature whose d= is the From: domain (RFC 6376 with
DMARC's strict alignment, RFC 7489 §3.1.1), so no other server can send as a chatmail address.
dkimpy does the cryptography, but its own DNS lookups block; here keys are fetched with
dnspython's asyncio resolver and handed to dkimpy by a function that only returns them.
A lookup that times out or fails answers 451: the sender retries, nothing is lost. Hostile
messages are answered 550 and never raise; ``filtermail.dkimcheck`` has the bounds that keep
dkimpy's work linear in the message size.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import dkim
import dkim.canonicalization
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from . import dkimcheck
from .dkimkey import generate_key, load_private_key, public_txt

__all__ = [
    "DnsKeys",
    "Key",
    "Signer",
    "SigningError",
    "Verdict",
    "Verifier",
    "generate_key",
    "public_txt",
]

log = logging.getLogger(__name__)

LOOKUP_FAILED = "4.7.5 DKIM key lookup failed, try again later"
INLINE_BYTES = 256 * 1024  # larger messages are verified in a thread (see Verifier.verify)
# What a chat client's message carries in its header (the rest is inside the encryption),
# plus RFC 6376 §5.4.1's recommended fields. Fields that are not there are not signed.
SIGNED_FIELDS = frozenset(
    b"from sender reply-to to cc date subject message-id in-reply-to references mime-version "
    b"content-type content-transfer-encoding content-disposition content-id content-description "
    b"list-id list-unsubscribe list-post".split()
)
SIGNED_PREFIXES = (b"autocrypt", b"secure-join", b"chat-")  # Autocrypt, Delta Chat's own
# RFC 6376 §8.15: listing From once more than it occurs stops anyone adding a second From
OVERSIGNED = (b"from",)
_UNSHOWN = re.compile(r"[^A-Za-z0-9._:\[\]-]")


@dataclass(frozen=True)
class Verdict:
    """An SMTP answer: 250 if ``ok``; 550 refused ("5.7.1 ..."); 451 lookup failed ("4.7.5 ...")."""

    ok: bool
    code: int
    reason: str  # the reply text after the code, safe to show to the client and to log


def _refused(reason: str) -> Verdict:
    return Verdict(False, 550, f"5.7.1 {reason}")


class SigningError(ValueError):
    """The message cannot be signed (no single From, malformed or oversized header)."""


def a_labels(domain: str) -> str:
    """``domain`` as DNS names it (lowercase, IDNA A-labels), or "" if it is no DNS name."""
    name = domain.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    return name if dkimcheck.is_dns_name(name.encode("ascii")) else ""


def _shown(domain: str) -> str:
    """``domain`` fit for an SMTP reply and a log line."""
    return a_labels(domain) or _UNSHOWN.sub("?", domain)[:100]


def _signs(name: bytes) -> bool:
    return name in SIGNED_FIELDS or name.startswith(SIGNED_PREFIXES)


class Signer:
    """Signs outgoing mail as ``d=domain``, ``s=selector``: rsa-sha256, relaxed/relaxed."""

    def __init__(self, domain: str, selector: str, key_path: Path) -> None:
        """Load the key; OSError or ValueError (naming ``key_path``) if it cannot be used."""
        self.domain = a_labels(domain)
        if not self.domain:
            raise ValueError(f"DKIM domain {domain!r} is not a DNS name")
        if not dkimcheck.is_dns_name(selector.encode("utf-8")):
            raise ValueError(f"DKIM selector {selector!r} is not a DNS name")
        self.selector = selector
        self._key = load_private_key(key_path)
        # dkimpy's RSA is pure Python (about 7 ms per signature); OpenSSL's takes 0.3 ms
        from cryptography.hazmat.primitives import serialization

        self._rsa = serialization.load_pem_private_key(self._key, password=None)

    def sign(self, message: bytes) -> bytes:
        """The ``DKIM-Signature: ...\\r\\n`` field to put on top of ``message``.

        Raises SigningError (a ValueError) unless the message has exactly one From field and a
        header dkimpy can parse within dkimcheck's bounds. Takes about 30 ms of CPU per MB of
        body (canonicalization and hashing), so a caller on an event loop passes large messages
        through ``asyncio.to_thread``.

        dkimpy canonicalizes and hashes, exactly as when it signs itself (RFC 6376 §3.7); only
        the RSA signature of the hash is made by OpenSSL (``cryptography``). The tests check
        that dkimpy verifies what this signs.
        """
        try:
            parsed = dkimcheck.parse(message)
        except dkimcheck.Unparseable as exc:
            raise SigningError(str(exc)) from None
        names = [name.lower() for name, _ in parsed.dkim.headers]
        if names.count(b"from") != 1:
            raise SigningError(
                f"a message needs one From field to be signed, not {names.count(b'from')}"
            )
        include = tuple([n for n in names if _signs(n)] + list(OVERSIGNED))
        policy = RELAXED
        body = policy.canonicalize_body(parsed.relaxed_body)
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", b"relaxed/relaxed"),
            (b"d", self.domain.encode("ascii")),
            (b"q", b"dns/txt"),
            (b"s", self.selector.encode("ascii")),
            (b"t", str(int(time.time())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(hashlib.sha256(body).digest())),
            (b"b", b""),
        ]
        unsigned = dkim.fold(_tag_list(fields), namelen=len(FIELD_NAME), linesep=b"\r\n")
        digest = hashlib.sha256()
        headers = policy.canonicalize_headers(parsed.dkim.headers)
        dkim.hash_headers(digest, policy, headers, include, (FIELD_NAME, b" " + unsigned), {})
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        signature = self._rsa.sign(  # type: ignore[union-attr,call-arg]
            digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        )
        fields[-1] = (b"b", base64.b64encode(signature))
        value = dkim.fold(_tag_list(fields), namelen=len(FIELD_NAME), linesep=b"\r\n")
        return FIELD_NAME + b": " + value + b"\r\n"


FIELD_NAME = b"DKIM-Signature"
RELAXED = dkim.canonicalization.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


def _tag_list(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(name + b"=" + value for name, value in fields)


class Key(enum.Enum):
    """A key lookup that found no key."""

    MISSING = "no key"  # NXDOMAIN, or no TXT record at the name
    FAILED = "lookup failed"  # timeout, SERVFAIL, REFUSED, network error: try again later


# fetches the TXT record at a key's name ("sel._domainkey.example.org")
KeyLookup = Callable[[str], Awaitable["bytes | Key"]]


class DnsKeys:
    """Fetches DKIM keys with dnspython's asyncio resolver, within ``timeout`` seconds each."""

    def __init__(self, resolver: tuple[str, int] | None, timeout: float) -> None:
        if resolver is None:
            self._resolver = dns.asyncresolver.Resolver()  # reads /etc/resolv.conf
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(*resolver)]
        self._resolver.use_edns(0, 0, 1232)  # a 4096-bit key fits in one UDP answer
        self._resolver.timeout = self._resolver.lifetime = timeout

    async def __call__(self, name: str) -> bytes | Key:
        try:
            answer = await self._resolver.resolve(name + ".", "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return Key.MISSING
        except (dns.exception.DNSException, OSError) as exc:
            log.warning("DKIM key lookup of %s failed: %s", name, exc)
            return Key.FAILED
        # RFC 6376 §3.6.2.2: a record's strings are concatenated; several records at one name
        # are undefined: take the first that says it is a DKIM key
        records = [b"".join(rdata.strings) for rdata in answer]
        return next((r for r in records if r.lstrip().startswith(b"v=DKIM1")), records[0])


class Verifier:
    """Checks that incoming mail carries a valid DKIM signature of its From: domain."""

    def __init__(
        self, resolver: tuple[str, int] | None, timeout: float, *, lookup: KeyLookup | None = None
    ) -> None:
        """``resolver``: (IP, port) of the DNS resolver; None: the system's (/etc/resolv.conf).

        ``lookup`` replaces DNS (tests hand in keys from a dict).
        """
        self.timeout = timeout
        self._lookup = lookup or DnsKeys(resolver, timeout)

    async def verify(self, message: bytes, from_domain: str) -> Verdict:
        """Verdict on ``message`` (bytes as received) whose From: address is at ``from_domain``."""
        shown = _shown(from_domain)
        try:
            parsed = dkimcheck.parse(message)
        except dkimcheck.Unparseable as exc:
            return _refused(str(exc))
        total, sigs = dkimcheck.signatures(parsed, a_labels(from_domain))
        if not total:
            return _refused("No DKIM signature")
        if not sigs:
            return _refused(f"No DKIM signature of {shown}")
        names = sorted({sig.key_name.lower() for sig in sigs if not sig.problem})
        found = await asyncio.gather(*(self._lookup(name) for name in names))
        keys = dict(zip(names, found, strict=True))
        if len(message) <= INLINE_BYTES:
            return decide(parsed, sigs, keys, shown)
        # canonicalizing and hashing take about 30 ms of CPU per MB: not on the event loop
        return await asyncio.to_thread(decide, parsed, sigs, keys, shown)


def decide(
    parsed: dkimcheck.Parsed,
    sigs: list[dkimcheck.Signature],
    keys: dict[str, bytes | Key],
    shown: str,
) -> Verdict:
    """The verdict once the keys are known: one signature verifies, or the likeliest failure."""
    failed = does_not_verify = False
    missing = ""
    for sig in sigs:
        key = b"" if sig.problem else keys.get(sig.key_name.lower(), Key.MISSING)
        if key is Key.FAILED:
            failed = True
        elif key is Key.MISSING:
            missing = missing or sig.key_name
        else:
            problem = dkimcheck.verify_one(parsed, sig, key)
            if not problem:
                return Verdict(True, 250, f"2.7.0 DKIM signature of {shown} verified")
            log.debug("DKIM signature %d of %s does not verify: %s", sig.index, shown, problem)
            does_not_verify = True
    if failed:
        return Verdict(False, 451, LOOKUP_FAILED)
    if does_not_verify:
        return _refused(f"DKIM signature of {shown} does not verify")
    return _refused(f"No DKIM key for {missing}")
