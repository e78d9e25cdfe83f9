"""Dovecot 2.3's dict protocol: parsing the lines Dovecot sends and encoding the replies."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatmaild import dictproto as dp
from chatmaild import dictreply as dr

# Lines Dovecot 2.3.19 (Debian 12) was observed sending, byte for byte. In the lookup the password
# and user are escaped by %E (a backslash before \, " and '), then joined by an unescaped ".
OBSERVED_HELLO = b"H3\t2\t0\t\tauth"
OBSERVED_LOOKUP = (
    b'Lshared/passdb/klz\\"hl\\\\t64\\\'qkcolkyk4h5e"159shzhkb@example.org\t159shzhkb@example.org'
)
OBSERVED_ITERATE = b"I0\t0\tshared/userdb/\t*"
OBSERVED_BEGIN = b"B1\t159shzhkb@example.org"
OBSERVED_SET = b"S1\tshared/last-login/159shzhkb@example.org\t1795696977"
OBSERVED_COMMIT = b"C1"
OBSERVED = [
    OBSERVED_HELLO,
    OBSERVED_LOOKUP,
    OBSERVED_ITERATE,
    OBSERVED_BEGIN,
    OBSERVED_SET,
    OBSERVED_COMMIT,
]

USER = "159shzhkb@example.org"
REQUEST_TYPES = (
    dp.Hello,
    dp.Lookup,
    dp.Iterate,
    dp.Begin,
    dp.Commit,
    dp.Rollback,
    dp.Set,
    dp.Unset,
    dp.Append,
    dp.AtomicInc,
    dp.Timestamp,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (OBSERVED_HELLO, dp.Hello(major=3, minor=2, value_type="0", user="", dict_name="auth")),
        (
            OBSERVED_LOOKUP,
            dp.Lookup(
                key="shared/passdb/" + 'klz\\"hl\\\\t64\\\'qkcolkyk4h5e"' + USER,
                user=USER,
            ),
        ),
        (OBSERVED_ITERATE, dp.Iterate(flags=0, max_rows=0, path="shared/userdb/", user="*")),
        (OBSERVED_BEGIN, dp.Begin(tid=1, user=USER)),
        (
            OBSERVED_SET,
            dp.Set(tid=1, key="shared/last-login/" + USER, value="1795696977"),
        ),
        (OBSERVED_COMMIT, dp.Commit(tid=1, is_async=False)),
    ],
)
def test_lines_observed_from_dovecot_2_3_19_parse(line, expected):
    assert dp.parse_line(line) == expected


def test_observed_lookup_key_keeps_dovecots_backslashes_for_the_auth_layer():
    # the dict layer only undoes the tab escaping; the %E backslashes are doveauth's business
    req = dp.parse_line(OBSERVED_LOOKUP)
    assert req.key.count("\\") == 4
    assert "\t" not in req.key


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"H2\t1", dp.Hello(2, 1, "", "", "")),
        (b"H3\t2\t1\tuser@x\tlastlogin", dp.Hello(3, 2, "1", "user@x", "lastlogin")),
        (b"Lshared/userdb/a@b", dp.Lookup("shared/userdb/a@b", "")),
        (b"I8\t100\tshared/userdb/", dp.Iterate(8, 100, "shared/userdb/", "")),
        (b"I0\tshared/userdb/", dp.Iterate(0, 0, "shared/userdb/", "")),  # before 2.3
        (b"B7", dp.Begin(7, "")),
        (b"C12", dp.Commit(12, is_async=False)),
        (b"D12", dp.Commit(12, is_async=True)),
        (b"R3", dp.Rollback(3)),
        (b"S2\tshared/k\tv", dp.Set(2, "shared/k", "v")),
        (b"S2\tshared/k\t", dp.Set(2, "shared/k", "")),
        (b"U2\tshared/k", dp.Unset(2, "shared/k")),
        (b"P2\tshared/k\tmore", dp.Append(2, "shared/k", "more")),
        (b"A2\tshared/counter\t-3", dp.AtomicInc(2, "shared/counter", -3)),
        (b"A2\tshared/counter\t5", dp.AtomicInc(2, "shared/counter", 5)),
        (b"T2\t1795696977\t123456789", dp.Timestamp(2, 1795696977, 123456789)),
    ],
)
def test_every_command_parses(line, expected):
    assert dp.parse_line(line) == expected


def test_trailing_carriage_return_is_ignored():
    assert dp.parse_line(OBSERVED_COMMIT + b"\r") == dp.Commit(1)


def test_tab_escaped_fields_are_unescaped():
    line = b"S1\tshared/a\x01tb\x01nc\x01rd\x011e\x010f\tv\x01t\x01t"
    assert dp.parse_line(line) == dp.Set(1, "shared/a\tb\nc\rd\x01e\0f", "v\t\t")


def test_non_utf8_bytes_survive_as_surrogates():
    req = dp.parse_line(b'Lshared/passdb/pw\xff"a@b\ta@b')
    assert req.key == "shared/passdb/pw\udcff" + '"a@b'
    assert req.key.encode("utf-8", "surrogateescape") == b'shared/passdb/pw\xff"a@b'


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\r",
        b"X1",
        b"\x00",
        b"h3\t2",  # commands are case-sensitive
        b"H3",  # too few fields
        b"Hthree\t2",
        b"C",
        b"Cabc",
        b"C1\t2",
        b"C+1",
        b"C 1",
        b"C1_0",
        b"C\xd9\xa3",  # ARABIC-INDIC DIGIT THREE: int() takes it, the protocol does not
        b"C-",
        b"C" + b"1" * 21,
        b"B",
        b"Bx\tuser",
        b"La\tb\tc",
        b"I0",
        b"I0\t0\tp\tu\textra",
        b"Ix\t0\tp",
        b"S1\tk",
        b"S1\tk\tv\tw",
        b"Sx\tk\tv",
        b"U1",
        b"P1\tk",
        b"A1\tk\tmany",
        b"A1\tk",
        b"T1\t2",
        b"T1\tnow\t0",
    ],
)
def test_malformed_lines_are_protocol_errors(line):
    with pytest.raises(dp.DictProtocolError):
        dp.parse_line(line)


@pytest.mark.parametrize(
    "line", [b"C--5", b"T1\t--1\t0", b"I--0\t0\tshared/userdb/", b"A1\tk\t--2"]
)
def test_number_with_repeated_minus_is_a_protocol_error(line):
    # _int() lets "--5" through its digit check ("--5".lstrip("-") is "5"), then int() raises a
    # plain ValueError that the dict server does not catch.
    with pytest.raises(dp.DictProtocolError):
        dp.parse_line(line)


def test_line_of_max_length_parses():
    line = b"L" + b"k" * (dp.MAX_LINE - 1)
    assert len(line) == dp.MAX_LINE
    assert dp.parse_line(line) == dp.Lookup("k" * (dp.MAX_LINE - 1))


def test_line_longer_than_max_is_refused_as_too_long():
    # one byte over, and full of escapes: refused for its length, whatever it holds
    line = b"L" + b"\x01t" * (dp.MAX_LINE // 2)
    assert len(line) == dp.MAX_LINE + 1
    with pytest.raises(dp.DictProtocolError, match="too long"):
        dp.parse_line(line)


# -- escaping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain", "plain"),
        ("a\tb", "a\x01tb"),
        ("a\nb\rc", "a\x01nb\x01rc"),
        ("\x01", "\x011"),
        ("\0", "\x010"),
        ("", ""),
    ],
)
def test_escape_matches_dovecots_str_tabescape(text, escaped):
    assert dp.escape(text) == escaped
    assert dp.unescape(escaped) == text


def test_unknown_escape_stands_for_the_character_itself():
    assert dp.unescape("a\x01xb") == "axb"
    assert dp.unescape("trailing\x01") == "trailing"


@given(st.text())
@example("\x01\t\r\n\0\\")
@example("\udcff")
def test_escape_unescape_round_trip(text):
    escaped = dp.escape(text)
    assert dp.unescape(escaped) == text
    assert not set(escaped) & {"\t", "\r", "\n", "\0"}


@given(st.lists(st.text(), min_size=3, max_size=3))
def test_any_escaped_set_fields_parse_back(fields):
    _, key, value = fields
    line = ("S9\t" + dp.escape(key) + "\t" + dp.escape(value)).encode("utf-8", "surrogateescape")
    assert dp.parse_line(line) == dp.Set(9, key, value)


# -- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "encoded"),
    [
        (dr.Found('{"password": "{SHA512-CRYPT}$6$x"}'), b'O{"password": "{SHA512-CRYPT}$6$x"}\n'),
        (dr.Found("a\tb\nc"), b"Oa\x01tb\x01nc\n"),
        (dr.Found(""), b"O\n"),
        (dr.Found("\udcff"), b"O\xff\n"),
        (dr.NOT_FOUND, b"N\n"),
        (dr.NotFound(), b"N\n"),
        (dr.Failed("internal error"), b"Finternal error\n"),
        (dr.Failed("two\nlines"), b"Ftwo\x01nlines\n"),
    ],
)
def test_encode_lookup_exact_bytes(result, encoded):
    assert dr.encode_lookup(result) == encoded


@pytest.mark.parametrize(
    ("rows", "flags", "encoded"),
    [
        ([], 0, b"\n"),
        ([("shared/userdb/a@b", "")], 0, b"Oshared/userdb/a@b\t\n\n"),
        ([("k1", "v1"), ("k2", "v\t2")], 0, b"Ok1\tv1\nOk2\tv\x01t2\n\n"),
        # 0x08 is Dovecot's DICT_ITERATE_FLAG_NO_VALUE
        ([("k1", "v1"), ("k2", "v2")], 0x08, b"Ok1\t\nOk2\t\n\n"),
        ([("k1", "v1")], 0x08 | 0x01, b"Ok1\t\n\n"),
        ([("k\n1", "v1")], 0x01, b"Ok\x01n1\tv1\n\n"),
        (dr.Failed("no"), 0, b"F\n"),
    ],
)
def test_encode_iterate_exact_bytes(rows, flags, encoded):
    assert dr.encode_iterate(rows, flags) == encoded


@pytest.mark.parametrize(
    ("tid", "result", "is_async", "encoded"),
    [
        (1, None, False, b"O1\n"),
        (1, dr.NOT_FOUND, False, b"N1\n"),
        (1, dr.Failed("x"), False, b"F1\n"),
        (42, None, True, b"AO42\n"),
        (42, dr.NOT_FOUND, True, b"AN42\n"),
        (42, dr.Failed("x"), True, b"AF42\n"),
    ],
)
def test_encode_commit_exact_bytes(tid, result, is_async, encoded):
    assert dr.encode_commit(tid, result, is_async) == encoded


def test_encode_failure():
    assert dr.encode_failure() == b"F\n"


@given(st.text())
def test_any_found_value_is_one_reply_line(value):
    encoded = dr.encode_lookup(dr.Found(value))
    assert encoded.startswith(b"O")
    assert encoded.endswith(b"\n")
    assert encoded.count(b"\n") == 1
    assert dp.unescape(encoded[1:-1].decode("utf-8", "surrogateescape")) == value


# -- robustness: any bytes -----------------------------------------------------------------------

COMMANDS = b"HLIBCDRSUPAT"


def _parse_or_protocol_error(line: bytes) -> None:
    try:
        result = dp.parse_line(line)
    except dp.DictProtocolError:
        return
    assert isinstance(result, REQUEST_TYPES)


# (how fast these parse is measured in bench/, not asserted here)
@pytest.mark.parametrize("filler", [b"\x01", b"\x01t", b"\t", b"\xff", b"-", b"\x00\n"])
@pytest.mark.parametrize("cmd", list(COMMANDS))
def test_worst_case_lines_of_max_length_parse_or_raise_protocol_error(cmd, filler):
    line = (bytes([cmd]) + filler * dp.MAX_LINE)[: dp.MAX_LINE]
    _parse_or_protocol_error(line)


# bytes that matter to the parser: numbers, signs, tabs, escapes, line ends, invalid UTF-8
_interesting = st.lists(
    st.sampled_from([b"0", b"1", b"9", b"-", b"+", b"_", b" ", b"\t", b"\x01", b"t", b"n", b"0"])
    | st.sampled_from([b"\r", b"\n", b"\0", b"\xff", b"\xc3", b"\xd9\xa3", b"\xe2\x80\xa8"])
    | st.binary(max_size=8),
    max_size=40,
).map(b"".join)
_command_lines = st.builds(
    lambda c, rest: bytes([c]) + rest, st.sampled_from(COMMANDS), _interesting
)


_number_like = st.builds(
    str.__add__,
    st.sampled_from(["", "-", "--", "---", "+", "-+", " ", "\x01", "0x", "x"]),
    st.text(alphabet="0123456789_ ", max_size=4),
)
# number-like fields: what the numeric fields of H, I, B, C, D, R, S, U, P, A and T get wrong
_numeric_lines = st.builds(
    lambda c, fields: bytes([c]) + "\t".join(fields).encode(),
    st.sampled_from(COMMANDS),
    st.lists(_number_like, min_size=1, max_size=4),
)


def _mutate(line: bytes, pos: int, insert: bytes, cut: int) -> bytes:
    pos %= len(line) + 1
    return line[:pos] + insert + line[pos + cut :]


_mutated_observed = st.builds(
    _mutate,
    st.sampled_from(OBSERVED),
    st.integers(0, 200),
    st.binary(max_size=6),
    st.integers(0, 3),
)


def _long_line(cmd: int, piece: bytes, length: int) -> bytes:
    return (bytes([cmd]) + piece * (length // max(len(piece), 1) + 1))[:length]


_long_lines = st.builds(
    _long_line,
    st.sampled_from(COMMANDS),
    st.binary(min_size=1, max_size=6),
    st.integers(dp.MAX_LINE - 16, dp.MAX_LINE + 16),
)


@settings(max_examples=500)
@given(st.binary(max_size=2000))
@example(b"")
@example(b"\n\n")
@example(b"L\x00\x01")
@example(b"\xff\xfe")
def test_any_bytes_parse_or_raise_protocol_error(line):
    _parse_or_protocol_error(line)


@settings(max_examples=1000)
@given(_command_lines)
def test_any_command_line_parses_or_raises_protocol_error(line):
    _parse_or_protocol_error(line)


@settings(max_examples=1000)
@given(_numeric_lines)
def test_any_number_like_fields_parse_or_raise_protocol_error(line):
    _parse_or_protocol_error(line)


@settings(max_examples=500)
@given(_mutated_observed)
def test_mutated_dovecot_lines_parse_or_raise_protocol_error(line):
    _parse_or_protocol_error(line)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(_long_lines)
def test_huge_lines_parse_or_raise_protocol_error(line):
    _parse_or_protocol_error(line)
    if len(line) > dp.MAX_LINE:
        with pytest.raises(dp.DictProtocolError, match="too long"):
            dp.parse_line(line)
