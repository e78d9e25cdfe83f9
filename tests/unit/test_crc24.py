"""filtermail.crc24: libgcrypt's CRC-24 and the pure-Python one agree; the fallback is used when
libgcrypt cannot be."""

from __future__ import annotations

import ctypes
import os
from types import SimpleNamespace

import pytest
from helpers_env import require
from hypothesis import given
from hypothesis import strategies as st

from filtermail import crc24


@pytest.fixture
def libgcrypt_crc24():
    require(
        crc24.crc24_libgcrypt is not None,
        "libgcrypt (Debian's libgcrypt20) cannot be loaded: the armor check is slow",
    )
    return crc24.crc24_libgcrypt


def test_libgcrypt_is_used_where_it_loads(libgcrypt_crc24):
    assert crc24.crc24 is libgcrypt_crc24


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0xB704CE),  # the initial value, RFC 9580 §6.1
        (b"123456789", 0x21CF02),  # the check value of CRC-24/OPENPGP
    ],
)
def test_known_values(data, expected, libgcrypt_crc24):
    assert crc24.crc24_python(data) == expected
    assert libgcrypt_crc24(data) == expected


@given(st.binary(max_size=5000))
def test_libgcrypt_and_python_agree(data):
    if crc24.crc24_libgcrypt is not None:  # the fixture cannot run under @given
        assert crc24.crc24_libgcrypt(data) == crc24.crc24_python(data)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 255, 256, 4095, 4096, 65537, 1 << 20])
def test_libgcrypt_and_python_agree_on_sizes_around_block_edges(size, libgcrypt_crc24):
    data = os.urandom(size)
    assert libgcrypt_crc24(data) == crc24.crc24_python(data)
    assert libgcrypt_crc24(bytearray(data)) == crc24.crc24_python(data)


def fake_libgcrypt(*, fips: int = 0, has_crc24: bool = True, digest: bytes | None = None):
    """Just the libgcrypt functions crc24 calls; ``digest`` None hashes correctly."""

    def hash_buffer(algo, out, data, size):
        result = crc24.crc24_python(data[:size]).to_bytes(3, "big") if digest is None else digest
        ctypes.memmove(out, result, 3)

    def control(cmd, _arg):
        return fips if cmd == crc24.GCRYCTL_FIPS_MODE_P else 0

    return SimpleNamespace(
        gcry_check_version=lambda _: b"1.10.1",
        gcry_control=control,
        gcry_md_algo_info=lambda algo, what, _buf, _n: 0 if has_crc24 else 5,
        gcry_md_get_algo_dlen=lambda algo: 3,
        gcry_md_hash_buffer=hash_buffer,
    )


@pytest.mark.parametrize(
    "lib",
    [
        None,  # not installed
        SimpleNamespace(),  # not libgcrypt
        fake_libgcrypt(fips=1),
        fake_libgcrypt(has_crc24=False),
        fake_libgcrypt(digest=b"\x00\x00\x00"),  # wrong results
    ],
)
def test_python_version_is_the_fallback_where_libgcrypt_is_unusable(monkeypatch, lib):
    monkeypatch.setattr(crc24, "_open_libgcrypt", lambda: lib)
    assert crc24.load_libgcrypt_crc24() is None


def test_a_working_library_is_used(monkeypatch):
    monkeypatch.setattr(crc24, "_open_libgcrypt", fake_libgcrypt)
    loaded = crc24.load_libgcrypt_crc24()
    assert loaded is not None
    assert loaded(b"123456789") == 0x21CF02
