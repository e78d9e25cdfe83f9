"""Debian's supervisord without the memory it spends on pkg_resources and OpenSSL.

supervisord is the relay's longest-lived process, and on a small machine every megabyte of it
counts. Debian's supervisor 4.2 imports ``pkg_resources`` (setuptools' whole resource machinery,
about 7 MB of resident memory) for one thing only: turning the ``module:attribute`` specs of its
configuration (the RPC interface factory) into objects, which the standard library's
``importlib.metadata.EntryPoint`` does as well. And OpenSSL's libraries (about 7 MB) come in
through ``http.client`` (``ssl``) and ``hashlib`` (``_hashlib``), although supervisord serves
only a Unix socket here and hashes nothing that needs OpenSSL: hashlib has its own SHA-1 and
MD5 (supervisor's HTTP password hash), and ``random`` its own SHA-512.

This script is run by the Python that Debian's ``supervisord`` script names in its first line
(``relay.supervise`` starts it so). It gives supervisor a ``pkg_resources`` holding the one name
it uses, makes ``import ssl`` and ``import _hashlib`` fail (http.client and hashlib work without
them, as documented), and runs
supervisord's own ``main()`` with the same arguments. It must import nothing from this project:
that Python does not see the relay's venv.
"""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint


class _EntryPoint:
    """``pkg_resources.EntryPoint.parse("name=module:attr").resolve()``: supervisor's one use."""

    def __init__(self, value: str) -> None:
        self.value = value

    @classmethod
    def parse(cls, src: str) -> _EntryPoint:
        return cls(src.partition("=")[2].strip())

    def resolve(self) -> object:
        return EntryPoint("spec", self.value, "").load()


def main() -> None:
    for name in ("ssl", "_hashlib"):  # "import ssl" raises ImportError
        sys.modules[name] = None  # type: ignore[assignment]
    shim = types.ModuleType("pkg_resources", "The part of pkg_resources supervisor uses.")
    shim.EntryPoint = _EntryPoint  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    from supervisor.supervisord import main as supervisord

    sys.argv[0] = "supervisord"
    supervisord()


if __name__ == "__main__":
    main()
