"""DKIM keys: make one, read one, and say which TXT record publishes it.

``chatmail-relay dkim-key`` (root) calls ``generate_key`` and ``public_txt``; filtermail (as the
vmail user) calls ``load_private_key`` once when it starts. The only file written is the key at
``dkim_key_path``: PEM, mode 0640, created atomically by ``chatmaild.mailbox.create_exclusive``
(never over an existing key: the published TXT record names it). Giving the file to vmail's
group is the caller's job.

Keys are made and their public halves derived by Debian's ``openssl`` command (a dependency of
``dovecot-core``, so on every relay) instead of a crypto library in chatmaild's dependencies: a
relay makes one key in its life. Keys made by ``opendkim-genkey`` (PKCS#1 "RSA PRIVATE KEY")
load as well as OpenSSL 3's PKCS#8 "PRIVATE KEY".
"""

from __future__ import annotations

import base64
import errno
import subprocess
from pathlib import Path

import dkim.crypto

from chatmaild.mailbox import create_exclusive

from .dkimcheck import is_dns_name

OPENSSL = "openssl"
# RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits and SHOULD use 2048 or more;
# verifiers MUST accept keys from 1024 to 4096 bits.
KEY_BITS = 2048
MIN_KEY_BITS = 1024
KEY_MODE = 0o640
# RFC 1035 §3.3: a TXT record is a sequence of <character-string>s of at most 255 octets each;
# RFC 6376 §3.6.2.2: a verifier concatenates them.
TXT_STRING_MAX = 255


def load_private_key(key_path: Path) -> bytes:
    """The PEM bytes of the RSA private key at ``key_path``, checked to parse.

    Raises OSError (which names the path) if the file cannot be read, ValueError naming the path
    if it is not an RSA private key in PEM or is shorter than MIN_KEY_BITS.
    """
    data = Path(key_path).read_bytes()
    try:
        key = dkim.crypto.parse_pem_private_key(data)
        bits = int(key["modulus"]).bit_length()
    # dkimpy's ASN.1 reader fails on foreign data with more than its own exception
    except (dkim.crypto.UnparsableKeyError, ValueError, IndexError, KeyError, TypeError):
        raise ValueError(f"{key_path}: not an RSA private key in PEM format") from None
    if bits < MIN_KEY_BITS:
        raise ValueError(f"{key_path}: RSA key of {bits} bits, DKIM needs {MIN_KEY_BITS} or more")
    return data


def _openssl(*args: str, stdin: bytes = b"") -> bytes:
    try:
        done = subprocess.run(
            [OPENSSL, *args], input=stdin, capture_output=True, check=False, timeout=120
        )
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "openssl is not installed (Debian package openssl)") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        raise OSError(f"openssl {args[0]} failed: {''.join(detail) or done.returncode}")
    return done.stdout


def _record(public_der: bytes, selector: str, domain: str) -> str:
    value = "v=DKIM1; k=rsa; p=" + base64.b64encode(public_der).decode("ascii")
    strings = [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]
    quoted = " ".join(f'"{s}"' for s in strings)
    if not selector and not domain:
        return quoted
    domain = domain.lower().rstrip(".")
    for what, name in (("selector", selector), ("domain", domain)):
        if not is_dns_name(name.encode("utf-8")):
            raise ValueError(f"DKIM {what} {name!r} is not a DNS name")
    return f"{selector}._domainkey.{domain}. TXT {quoted}"


def public_txt(key_path: Path, selector: str = "", domain: str = "") -> str:
    """The DNS TXT record that publishes the key at ``key_path``.

    With ``selector`` and ``domain``: the zone file line
    ``<selector>._domainkey.<domain>. TXT "v=DKIM1; k=rsa; p=..." "..."``; without them only the
    quoted strings after ``TXT``. The value is split into strings of at most 255 characters.
    """
    pem = load_private_key(key_path)
    der = _openssl("pkey", "-pubout", "-outform", "DER", stdin=pem)
    return _record(der, selector, domain)


def generate_key(key_path: Path, selector: str, domain: str) -> str:
    """Write a new RSA-2048 key to ``key_path`` (mode 0640) and return its TXT record line.

    Raises FileExistsError if ``key_path`` exists: its public half may be published already.
    The parent directory is created (0755) if missing; the key never exists half-written.
    """
    key_path = Path(key_path)
    if not (selector and domain):
        raise ValueError("a DKIM key needs a selector and a domain")
    _record(b"", selector, domain)  # check the names before the slow part
    if key_path.exists():
        raise FileExistsError(errno.EEXIST, "refusing to overwrite a DKIM key", str(key_path))
    pem = _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{KEY_BITS}")
    if not key_path.parent.is_dir():  # vmail must reach the key through it, whatever the umask
        key_path.parent.mkdir(parents=True)
        key_path.parent.chmod(0o755)
    if not create_exclusive(key_path, pem, mode=KEY_MODE):
        raise FileExistsError(errno.EEXIST, "refusing to overwrite a DKIM key", str(key_path))
    return public_txt(key_path, selector, domain)
