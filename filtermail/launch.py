"""The console script ``filtermail``: the daemon, without Python's TLS library.

asyncio imports ``ssl`` when it can, and loading OpenSSL that way costs the process about 4 MB
of resident memory. filtermail speaks plain SMTP on loopback only (Postfix does the TLS), so the
console script makes ``import ssl`` fail before anything imports asyncio (asyncio then works
without TLS, as it is documented to; DKIM signing uses ``cryptography``'s own binding).
``python -m filtermail`` keeps the ordinary behaviour.
"""

from __future__ import annotations

import sys


def main() -> int:
    if "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # "import ssl" raises ImportError
    from .__main__ import main as filtermail

    return filtermail()
