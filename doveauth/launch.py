"""The console scripts ``doveauth`` and ``lastlogin``: the daemons, without a TLS library.

asyncio imports ``ssl`` when it can, and loading OpenSSL costs each process about 4 MB of
resident memory. The daemons speak only Dovecot's dict protocol on Unix sockets, so their
console scripts make ``import ssl`` fail before anything imports asyncio (asyncio then works
without TLS, as it is documented to). ``python -m doveauth`` keeps the ordinary behaviour.
"""

from __future__ import annotations

import sys


def _without_tls() -> None:
    if "ssl" not in sys.modules:
        sys.modules["ssl"] = None  # type: ignore[assignment]  # "import ssl" raises ImportError


def doveauth() -> int:
    _without_tls()
    from .__main__ import main

    return main()


def lastlogin() -> int:
    _without_tls()
    from .lastlogin import main

    return main()
