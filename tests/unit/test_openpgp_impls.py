"""filtermail over messages written by real OpenPGP implementations: GnuPG, PGPy and Sequoia.

Each encrypted message must pass ``openpgp.check_armored_message`` and, wrapped in RFC 3156's
two parts, ``mime.check_encrypted`` both outgoing and incoming; what each implementation writes
for plaintext (signed, compressed, literal) must not. The packets each one writes are read back
with Sequoia's parser, so the tests pin which packet versions they cover:

- Sequoia (pysequoia): RFC 9580 v6 keys, v6 PKESKs, SEIPD v2 (AEAD), armor without a CRC line;
  v4 keys get v6 PKESKs and SEIPD v2 too; a password gets SKESK v4 and SEIPD v1.
- PGPy: v4 keys, PKESK v3 and SEIPD v1 with a CRC line; signed, compressed (inside the SEIPD),
  or password-encrypted.
- GnuPG 2.2 (Debian 12): old-format PKESKs, SEIPD v1 in 8 KiB partial body chunks.

Then hostile variants of those real messages, and Hypothesis mutating them: nothing may raise
anything but NotEncrypted, and nothing may run for long (a loop that does not consume its input
would never end; ``decided`` turns that into a failure instead of a hung test run).

pgpy and pysequoia come with the ``[test]`` extra: a missing one fails the import, not a skip.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import warnings
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysequoia import Profile, Tsk, decrypt, encrypt, sign
from pysequoia.packet import PacketPile
from test_mime import encrypted_mail
from test_openpgp import armor

from filtermail.mime import check_encrypted, parse
from filtermail.openpgp import BEGIN, END, NotEncrypted, check_armored_message, check_packets

with warnings.catch_warnings():  # PGPy 0.6 names ciphers cryptography moved to "decrepit"
    warnings.simplefilter("ignore")
    import pgpy
    from pgpy.constants import (
        CompressionAlgorithm,
        EllipticCurveOID,
        HashAlgorithm,
        KeyFlags,
        PubKeyAlgorithm,
        SymmetricKeyAlgorithm,
    )

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Selected compression algorithm not in key preferences"),
    pytest.mark.filterwarnings("ignore:TODO:UserWarning"),  # PGPy's verify() on what it skips
]

BODY = b"a chat message, with an attachment or two\n" * 40
HANG_SECONDS = 10  # not a speed limit (see bench/filtermail_check_bench.py): a hang detector


@contextlib.contextmanager
def decided(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail with TimeoutError if the block has not returned after ``seconds``."""

    def expire(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"no decision within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def packets(data: bytes | str) -> list[tuple[str, int]]:
    """(Sequoia's name of each packet's tag, the first octet of its body: mostly the version)."""
    raw = data.encode() if isinstance(data, str) else data
    return [(str(p.tag).rsplit(".", 1)[-1], p.body[0]) for p in PacketPile.from_bytes(raw)]


def assert_passes(armored: str) -> None:
    """One encrypted message: as armor, and as RFC 3156 mail outgoing and incoming."""
    check_armored_message(armored, allow_headers=False)
    for outgoing in (True, False):
        check_encrypted(parse(encrypted_mail(armored)), outgoing=outgoing)


def assert_refused(armored: str, why: str = "") -> None:
    with pytest.raises(NotEncrypted, match=why):
        check_armored_message(armored, allow_headers=True)
    for outgoing in (True, False):
        with pytest.raises(NotEncrypted, match=why):
            check_encrypted(parse(encrypted_mail(armored)), outgoing=outgoing)


def has_crc_line(armored: str) -> bool:
    return any(line.startswith("=") for line in armored.splitlines())


# -- Sequoia: RFC 9580 v6 keys and SEIPD v2 ------------------------------------------------------


@pytest.fixture(scope="module")
def v6_key() -> Tsk:
    return Tsk.generate("bob@example.org", profile=Profile.RFC9580)


@pytest.fixture(scope="module")
def v4_key() -> Tsk:
    return Tsk.generate("carol@example.org", profile=Profile.RFC4880)


def test_sequoia_v6_key_message_is_seipd2_without_crc_and_passes(v6_key):
    cert = v6_key.extract_certificate()
    assert packets(bytes(cert))[0] == ("PublicKey", 6)
    armored = encrypt(BODY, recipients=[cert]).decode()
    assert packets(armored) == [("PKESK", 6), ("SEIP", 2)]
    assert not has_crc_line(armored)  # RFC 9580 §6.1: Sequoia leaves the CRC out
    assert_passes(armored)
    assert decrypt(armored.encode(), decryptor=v6_key.decryptor()).bytes == BODY


def test_sequoia_signed_then_encrypted_message_passes(v6_key):
    cert = v6_key.extract_certificate()
    armored = encrypt(BODY, recipients=[cert], signer=v6_key.signer()).decode()
    assert packets(armored) == [("PKESK", 6), ("SEIP", 2)]
    assert_passes(armored)
    decrypted = decrypt(armored.encode(), decryptor=v6_key.decryptor(), store=lambda _: [cert])
    assert decrypted.bytes == BODY and decrypted.valid_sigs


def test_sequoia_message_to_v4_and_v6_keys_passes(v4_key, v6_key):
    recipients = [v4_key.extract_certificate(), v6_key.extract_certificate()]
    armored = encrypt(BODY, recipients=recipients).decode()
    assert packets(armored) == [("PKESK", 6), ("PKESK", 6), ("SEIP", 2)]
    assert_passes(armored)


def test_sequoia_password_message_passes():
    armored = encrypt(BODY, passwords=["a password"]).decode()
    assert packets(armored) == [("SKESK", 4), ("SEIP", 1)]
    assert_passes(armored)


def test_sequoia_large_message_passes(v6_key):
    armored = encrypt(os.urandom(300_000), recipients=[v6_key.extract_certificate()]).decode()
    assert_passes(armored)


def test_sequoia_signed_plaintext_is_refused(v6_key):
    armored = sign(v6_key.signer(), BODY).decode()
    assert [name for name, _ in packets(armored)] == ["OnePassSig", "Literal", "Signature"]
    assert_refused(armored, "tag 4")


# -- PGPy: v4 keys, SEIPD v1, compression inside the encryption ----------------------------------


@pytest.fixture(scope="module")
def pgpy_key() -> pgpy.PGPKey:
    """An Ed25519 primary key with a Curve25519 encryption subkey."""
    key = pgpy.PGPKey.new(PubKeyAlgorithm.EdDSA, EllipticCurveOID.Ed25519)
    key.add_uid(
        pgpy.PGPUID.new("Alice", email="alice@example.org"),
        usage={KeyFlags.Sign, KeyFlags.Certify},
        hashes=[HashAlgorithm.SHA256],
        ciphers=[SymmetricKeyAlgorithm.AES256],
        compression=[CompressionAlgorithm.ZLIB, CompressionAlgorithm.Uncompressed],
    )
    subkey = pgpy.PGPKey.new(PubKeyAlgorithm.ECDH, EllipticCurveOID.Curve25519)
    key.add_subkey(subkey, usage={KeyFlags.EncryptCommunications, KeyFlags.EncryptStorage})
    return key


def pgpy_message(
    key: pgpy.PGPKey,
    *,
    signed: bool = False,
    compression: CompressionAlgorithm = CompressionAlgorithm.Uncompressed,
) -> pgpy.PGPMessage:
    message = pgpy.PGPMessage.new(BODY.decode(), compression=compression)
    if signed:
        message |= key.sign(message)
    return message


def test_pgpy_encrypted_message_passes(pgpy_key):
    encrypted = pgpy_key.pubkey.encrypt(pgpy_message(pgpy_key))
    armored = str(encrypted)
    assert packets(armored) == [("PKESK", 3), ("SEIP", 1)]
    assert has_crc_line(armored)
    assert_passes(armored)
    assert pgpy_key.decrypt(encrypted).message == BODY.decode()


def test_pgpy_signed_then_encrypted_message_passes(pgpy_key):
    encrypted = pgpy_key.pubkey.encrypt(pgpy_message(pgpy_key, signed=True))
    assert_passes(str(encrypted))
    decrypted = pgpy_key.decrypt(encrypted)
    assert decrypted.is_signed and pgpy_key.pubkey.verify(decrypted)


def test_pgpy_compressed_then_encrypted_message_passes(pgpy_key):
    """The compressed packet is inside the SEIPD: the outside is session key and SEIPD only."""
    message = pgpy_message(pgpy_key, signed=True, compression=CompressionAlgorithm.ZLIB)
    assert bytes(message)[0] & 0x3F == 8  # a compressed data packet ...
    encrypted = pgpy_key.pubkey.encrypt(message)
    assert packets(str(encrypted)) == [("PKESK", 3), ("SEIP", 1)]  # ... encrypted
    assert_passes(str(encrypted))
    assert pgpy_key.decrypt(encrypted).is_compressed


def test_pgpy_password_message_passes(pgpy_key):
    armored = str(pgpy_message(pgpy_key).encrypt("a password"))
    assert packets(armored) == [("SKESK", 4), ("SEIP", 1)]
    assert_passes(armored)


@pytest.mark.parametrize(
    ("signed", "compression", "why"),
    [
        (False, CompressionAlgorithm.Uncompressed, "tag 11"),  # a bare literal data packet
        (True, CompressionAlgorithm.Uncompressed, "tag 4"),  # one-pass signature, literal
        (False, CompressionAlgorithm.ZLIB, "tag 8"),  # compressed literal
        (True, CompressionAlgorithm.ZLIB, "tag 8"),
    ],
)
def test_pgpy_plaintext_forms_are_refused(pgpy_key, signed, compression, why):
    assert_refused(str(pgpy_message(pgpy_key, signed=signed, compression=compression)), why)


# -- GnuPG 2.2 in the RFC 3156 shape (the armor alone: test_openpgp.py) --------------------------


def test_gnupg_encrypted_and_signed_then_encrypted_mail_passes(gpg):
    for sign_too in ((), ("--sign",)):
        armored = gpg("--armor", *sign_too, "--encrypt", "-r", "alice@example.org", data=BODY)
        assert packets(armored) == [("PKESK", 3), ("SEIP", 1)]
        assert_passes(armored.decode())


def test_gnupg_signed_plaintext_mail_is_refused(gpg):
    assert_refused(gpg("--armor", "--sign", data=BODY).decode(), "tag 8")


# -- hostile variants of real messages -----------------------------------------------------------


@pytest.fixture(scope="module")
def real_messages(v6_key, pgpy_key, gpg) -> dict[str, bytes]:
    """The binary packets of one encrypted message from each implementation."""
    sequoia = encrypt(BODY, recipients=[v6_key.extract_certificate()], armor=False)
    pgpy_encrypted = bytes(pgpy_key.pubkey.encrypt(pgpy_message(pgpy_key)))
    gnupg = gpg("--encrypt", "-r", "alice@example.org", data=os.urandom(20_000))
    return {"sequoia": sequoia, "pgpy": pgpy_encrypted, "gnupg": gnupg}


IMPLS = ("sequoia", "pgpy", "gnupg")
LITERAL = b"\xcb\x0bb\x00\x00\x00\x00\x00hello"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d + LITERAL, "after the encrypted data"),
        (lambda d: d + d, "after the encrypted data"),  # two SEIPDs (and session keys)
        (lambda d: d + b"\x00" * 7, "after the encrypted data"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: LITERAL + d, "tag 11"),
        (lambda d: b"\xc8\x02\x01\x00" + d, "tag 8"),  # a compressed packet in front
    ],
    ids=["literal after", "twice", "junk after", "cut", "half", "literal before", "compressed"],
)
def test_real_messages_with_more_or_less_are_refused(real_messages, impl, mutate, why):
    data = mutate(real_messages[impl])
    with pytest.raises(NotEncrypted, match=why):
        check_packets(data)
    assert_refused(armor(data), why)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda t: t + "junk after the armor\n", "does not end"),
        (lambda t: t.replace("\n\n", "\n\n!!!!", 1), "base64"),
        (lambda t: t.replace("\n\n", "\n\n====", 1), "base64"),
        (lambda t: t[: t.index("\n=")] + "\n=AAAA\n" + END + "\n", "checksum"),
        (lambda t: t.replace(END, ""), "does not end"),
        (lambda t: t + t, "does not end|base64"),  # two armored messages
        (lambda t: "hello\n" + t, "no '-----BEGIN"),
    ],
    ids=["text after", "garbage", "padding", "wrong crc", "no end", "twice", "text before"],
)
def test_real_messages_with_bad_armor_are_refused(real_messages, impl, mutate, why):
    assert_refused(mutate(armor(real_messages[impl])), why)


@pytest.mark.parametrize("impl", IMPLS)
def test_real_messages_in_the_wrong_mime_shape_are_refused(real_messages, impl):
    armored = armor(real_messages[impl])
    shapes: list[tuple[bytes, str]] = [
        (  # the parts swapped
            encrypted_mail(
                "Version: 1",
                control=armored,
                control_type="application/octet-stream",
                data_type="application/pgp-encrypted",
            ),
            "first part",
        ),
        (
            encrypted_mail(armored, extra_part="--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"),
            "exactly two parts",
        ),
        (  # the encrypted message nested in multipart/mixed
            b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
            + encrypted_mail(armored)
            + b"\r\n--m--\r\n",
            "multipart/mixed",
        ),
        (encrypted_mail(armored, content_type="multipart/signed"), "not multipart/encrypted"),
    ]
    for mail, why in shapes:
        with pytest.raises(NotEncrypted, match=why):
            check_encrypted(parse(mail), outgoing=False)


# -- huge headers --------------------------------------------------------------------------------


def test_many_armor_headers_are_refused(real_messages):
    armored = armor(real_messages["sequoia"], headers="Comment: x\n" * 65)
    with pytest.raises(NotEncrypted, match="more than 64 armor headers"):
        check_armored_message(armored, allow_headers=True)
    check_armored_message(
        armor(real_messages["sequoia"], headers="Comment: x\n" * 64), allow_headers=True
    )


def test_a_huge_armor_header_passes_incoming_only(real_messages):
    armored = armor(real_messages["pgpy"], headers="Comment: " + "x" * 1_000_000)
    with decided():
        check_armored_message(armored, allow_headers=True)
        with pytest.raises(NotEncrypted, match="reveal the client"):
            check_armored_message(armored, allow_headers=False)


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Filler: abc\r\n" * 50_000,
        b"Subject: " + b"x" * 1_000_000 + b"\r\n",
        b"Subject: x" + b"\r\n x" * 50_000 + b"\r\n",
    ],
    ids=["many header lines", "a 1 MB header", "a header folded 50,000 times"],
)
def test_huge_mail_headers_do_not_hide_an_encrypted_message(real_messages, headers):
    mail = headers + encrypted_mail(armor(real_messages["gnupg"]))
    with decided():
        check_encrypted(parse(mail), outgoing=True)


CT = b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"'


def test_deeply_nested_comments_in_content_type_are_refused(real_messages):
    mail = encrypted_mail(armor(real_messages["pgpy"]))
    mail = mail.replace(CT, CT + b" " + b"(" * 500 + b")" * 500, 1)
    with pytest.raises(NotEncrypted):
        check_encrypted(parse(mail), outgoing=True)


def ends_within(seconds: float, call: Callable[[], object]) -> None:
    """Run ``call`` in a forked child; TimeoutError if it is still running after ``seconds``.

    A child can be stopped where it is; an alarm's exception can be swallowed (raised in a
    destructor, say), and then the test would run for as long as the call does.
    """
    child = multiprocessing.get_context("fork").Process(target=call)
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        raise TimeoutError(f"still running after {seconds} s")
    assert child.exitcode == 0


def test_a_content_type_with_many_parameters_is_decided(real_messages):
    params = b"".join(b"; p%d=v" % i for i in range(20_000))
    mail = encrypted_mail(armor(real_messages["pgpy"])).replace(CT, CT + params, 1)

    def decide() -> None:
        with contextlib.suppress(NotEncrypted):
            check_encrypted(parse(mail), outgoing=True)

    ends_within(2, decide)


# -- Hypothesis: mutated real messages only ever refuse, and never hang ---------------------------

Mutation = Callable[[bytes], bytes]


def mutations() -> st.SearchStrategy[Mutation]:
    """Cut, splice in, overwrite or drop bytes at some fraction of the input's length."""
    where = st.floats(0, 1)
    junk = st.binary(min_size=1, max_size=40)

    def at(fraction: float, data: bytes) -> int:
        return int(fraction * len(data))

    return st.one_of(
        where.map(lambda f: lambda d: d[: at(f, d)]),
        st.tuples(where, junk).map(lambda c: lambda d: d[: at(c[0], d)] + c[1] + d[at(c[0], d) :]),
        st.tuples(where, junk).map(
            lambda c: lambda d: d[: at(c[0], d)] + c[1] + d[at(c[0], d) + len(c[1]) :]
        ),
        st.tuples(where, where).map(lambda c: lambda d: d[: at(c[0], d)] + d[at(c[1], d) :]),
    )


def only_refuses(call: Callable[[], object]) -> None:
    with decided(), contextlib.suppress(NotEncrypted):
        call()


@given(impl=st.sampled_from(IMPLS), mutate=mutations())
def test_mutated_real_packets_are_only_ever_refused(real_messages, impl, mutate):
    data = mutate(real_messages[impl])
    only_refuses(lambda: check_packets(data))
    only_refuses(lambda: check_armored_message(armor(data), allow_headers=False))


@given(impl=st.sampled_from(IMPLS), mutate=mutations(), outgoing=st.booleans())
def test_mutated_real_mail_is_only_ever_refused(real_messages, impl, mutate, outgoing):
    mail = mutate(encrypted_mail(armor(real_messages[impl])))
    only_refuses(lambda: check_encrypted(parse(mail), outgoing=outgoing))


@given(impl=st.sampled_from(IMPLS), mutate=mutations())
def test_mutated_real_armor_is_only_ever_refused(real_messages, impl, mutate):
    text = mutate(armor(real_messages[impl]).encode()).decode("latin-1")
    only_refuses(lambda: check_armored_message(text, allow_headers=True))
    only_refuses(lambda: check_armored_message(BEGIN + "\n\n" + text, allow_headers=True))
