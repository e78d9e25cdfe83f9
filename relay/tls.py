"""The relay's TLS certificate: the operator's own, or a self-signed one made once and kept.

An IP-only relay (the default ``[127.0.0.1]``) cannot get a certificate from a public
authority, so ``up`` makes a self-signed one in the state directory the first time and keeps it
(clients that accepted it keep working; Delta Chat's ``ic=3`` accepts it). A relay with
``tls_external_cert_and_key`` in chatmail.ini uses those files, which must exist.
"""

from __future__ import annotations

import ipaddress
import subprocess

from chatmaild.config import Config

from .render import Layout


class CertificateError(RuntimeError):
    """The certificate cannot be made or found; the message says what to do."""


def ensure_certificate(config: Config, layout: Layout, listen: str) -> None:
    if config.tls_external_cert_and_key is not None:
        for path in config.tls_external_cert_and_key:
            if not path.is_file():
                raise CertificateError(
                    f"{path} (tls_external_cert_and_key in {config.path}) does not exist"
                )
        return
    cert, key = layout.tls_dir / "cert.pem", layout.tls_dir / "key.pem"
    if cert.exists() and key.exists():
        return
    layout.tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = [f"IP:{config.mail_domain}" if config.is_ip_relay else f"DNS:{config.mail_domain}"]
    if not ipaddress.ip_address(listen).is_unspecified and f"IP:{listen}" not in names:
        names.append(f"IP:{listen}")
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "3650", "-subj", f"/CN={config.mail_domain}",
        "-addext", f"subjectAltName={','.join(names)}",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise CertificateError("openssl not found: install Debian's openssl") from None
    if result.returncode != 0:
        raise CertificateError(f"openssl could not make a certificate: {result.stderr.strip()}")
    key.chmod(0o600)
    cert.chmod(0o644)
