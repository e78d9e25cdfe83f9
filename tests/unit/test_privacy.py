"""filtermail.privacy: outgoing header blocks lose Received fields and the visible subject, and
nothing else changes by a single byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from filtermail.privacy import head_end, rewrite, rewrite_head

BODY = b"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\nSubject: body\r\n"
MAIL = (
    b"Received: from client (unknown [203.0.113.7])\r\n"
    b"\tby relay (Postfix) with ESMTPSA id 4AB;\r\n"
    b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: <alice@[127.0.0.1]>\r\n"
    b"Subject: =?utf-8?q?secret_plans?=\r\n"
    b"  continued\r\n"
    b"Autocrypt: addr=alice@[127.0.0.1]; keydata=AAAA\r\n"
    b" BBBB\r\n"
    b"received: second hop\r\n"
    b"Content-Type: multipart/encrypted; boundary=b1\r\n"
    b"\r\n" + BODY
)


def test_received_fields_go_and_the_subject_is_hidden():
    assert rewrite(MAIL) == (
        b"From: <alice@[127.0.0.1]>\r\n"
        b"Subject: [...]\r\n"
        b"Autocrypt: addr=alice@[127.0.0.1]; keydata=AAAA\r\n"
        b" BBBB\r\n"
        b"Content-Type: multipart/encrypted; boundary=b1\r\n"
        b"\r\n" + BODY
    )


def test_the_setup_message_keeps_its_subject():
    kept = rewrite(MAIL, keep_subject=True)
    assert b"Subject: =?utf-8?q?secret_plans?=\r\n  continued\r\n" in kept
    assert b"eceived" not in kept


def test_a_message_without_those_fields_is_unchanged():
    mail = b"From: a@b\r\nSubject: [...]\r\nX-Other: 1\r\n\r\nReceived: in the body\r\n"
    assert rewrite(mail) == mail


def test_lf_line_ends_stay_lf():
    assert (
        rewrite(b"Received: x\n y\nSubject: hi\nA: b\n\nbody\n")
        == b"Subject: [...]\nA: b\n\nbody\n"
    )


def test_only_the_header_block_is_rewritten():
    mail = b"A: 1\r\n\r\nSubject: inside\r\nReceived: inside\r\n"
    assert rewrite(mail) == mail
    assert rewrite(b"Subject: last") == b"Subject: [...]"


def test_lines_that_are_no_field_are_kept():
    block = b"A: 1\r\nno field here\r\n continued\r\nSubject : x\r\n"
    assert rewrite_head(block) == b"A: 1\r\nno field here\r\n continued\r\nSubject: [...]\r\n"


@pytest.mark.parametrize(
    ("message", "end"),
    [(b"A: 1\r\n\r\nbody", 6), (b"A: 1\n\nbody", 5), (b"\r\nbody", 0), (b"A: 1\r\n", 6), (b"", 0)],
)
def test_head_end_is_the_first_empty_line(message, end):
    assert head_end(message) == end


field_line = st.builds(
    lambda name, value: name + b": " + value + b"\r\n",
    st.sampled_from([b"Received", b"Subject", b"From", b"X-A", b"received"]),
    st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)


@given(st.lists(field_line, max_size=8), st.binary(max_size=50))
def test_everything_but_the_named_fields_survives_byte_for_byte(fields, body):
    message = b"".join(fields) + b"\r\n" + body
    result = rewrite(message)
    kept = [f for f in fields if not f.lower().startswith((b"received:", b"subject:"))]
    subjects = [f for f in fields if f.lower().startswith(b"subject:")]
    head = result[: head_end(result)]
    assert result == head + b"\r\n" + body
    lines = head.split(b"\r\n")
    assert [line for line in lines if line.startswith(b"Subject")] == [b"Subject: [...]"] * len(
        subjects
    )
    assert b"".join(field for field in kept) == b"".join(
        line + b"\r\n" for line in lines[:-1] if not line.startswith(b"Subject")
    )
