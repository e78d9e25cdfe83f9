"""RFC 9580 §6.1's CRC-24 of the armor checksum line: libgcrypt's when it loads, else Python's.

The pure-Python table version costs about 0.06 s of CPU per MB; filtermail checks every message
of a relay, so ``crc24`` uses libgcrypt's ``GCRY_MD_CRC24_RFC2440`` (about 0.1 ms per MB, and
ctypes releases the GIL during the call) from Debian's ``libgcrypt20``, which every Debian
system has (apt, systemd and GnuPG depend on it). If the library cannot be loaded, is in FIPS
mode, lacks the algorithm, or disagrees with the table version on a test vector, ``crc24`` is the
table version; both give identical results (tests/unit/test_crc24.py).

No process, socket or file of its own: it only loads a shared library read-only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

INIT = 0xB704CE
POLY = 0x1864CFB
# gcrypt.h (libgcrypt 1.10): enum gcry_md_algos and enum gcry_ctl_cmds
GCRY_MD_CRC24_RFC2440 = 304
GCRYCTL_TEST_ALGO = 8
GCRYCTL_DISABLE_SECMEM = 37
GCRYCTL_INITIALIZATION_FINISHED = 38
GCRYCTL_INITIALIZATION_FINISHED_P = 39
GCRYCTL_FIPS_MODE_P = 55
LIBGCRYPT_SONAME = "libgcrypt.so.20"  # Debian 12 and 13: libgcrypt20
# the check value of this CRC (catalogued as CRC-24/OPENPGP) over these nine octets
TEST_VECTOR = (b"123456789", 0x21CF02)


def _table() -> tuple[int, ...]:
    table = []
    for octet in range(256):
        crc = octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= POLY
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_TABLE = _table()


def crc24_python(data: bytes) -> int:
    """The CRC-24 of ``data``, one table step per octet (the bitwise definition, 8 bits at once)."""
    crc, table = INIT, _TABLE
    for octet in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ octet]
    return crc


def _open_libgcrypt() -> ctypes.CDLL | None:
    for name in (LIBGCRYPT_SONAME, ctypes.util.find_library("gcrypt")):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
    return None


def load_libgcrypt_crc24() -> Callable[[bytes], int] | None:
    """libgcrypt's CRC-24 as a function like ``crc24_python``, or None if it is unusable."""
    lib = _open_libgcrypt()
    if lib is None:
        log.info("libgcrypt not found: the armor checksum uses the slow Python CRC-24")
        return None
    try:
        check_version, control = lib.gcry_check_version, lib.gcry_control
        algo_info, hash_buffer = lib.gcry_md_algo_info, lib.gcry_md_hash_buffer
        dlen = lib.gcry_md_get_algo_dlen
    except AttributeError:
        return None
    check_version.argtypes, check_version.restype = [ctypes.c_char_p], ctypes.c_char_p
    control.restype = ctypes.c_uint  # gcry_error_t; variadic: int arguments pass as they are
    algo_info.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    algo_info.restype = ctypes.c_uint
    dlen.argtypes, dlen.restype = [ctypes.c_int], ctypes.c_uint
    hash_buffer.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    hash_buffer.restype = None
    # the libgcrypt manual's "Initializing the library": version check first, then (unless
    # another user in this process did it already) no secure memory, since nothing here is
    # secret, and initialization finished
    if check_version(None) is None:
        return None
    if not control(GCRYCTL_INITIALIZATION_FINISHED_P, 0):
        control(GCRYCTL_DISABLE_SECMEM, 0)
        control(GCRYCTL_INITIALIZATION_FINISHED, 0)
    # In FIPS mode a non-approved digest may put the library into an error state.
    if control(GCRYCTL_FIPS_MODE_P, 0):
        return None
    if algo_info(GCRY_MD_CRC24_RFC2440, GCRYCTL_TEST_ALGO, None, None) != 0:
        return None
    if dlen(GCRY_MD_CRC24_RFC2440) != 3:
        return None

    def libgcrypt_crc24(data: bytes) -> int:
        """The CRC-24 of ``data``: libgcrypt writes it as three octets, most significant first."""
        out = ctypes.create_string_buffer(3)
        hash_buffer(
            GCRY_MD_CRC24_RFC2440, out, data if type(data) is bytes else bytes(data), len(data)
        )
        return int.from_bytes(out.raw, "big")

    sample, expected = TEST_VECTOR
    if libgcrypt_crc24(sample) != expected or libgcrypt_crc24(b"") != INIT:
        log.warning("libgcrypt's CRC-24 gives wrong results: using the Python CRC-24")
        return None
    return libgcrypt_crc24


crc24_libgcrypt = load_libgcrypt_crc24()
crc24: Callable[[bytes], int] = crc24_libgcrypt or crc24_python
