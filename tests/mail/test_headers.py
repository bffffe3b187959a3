"""The SMTP-time header summary reads only headers, quickly."""

from __future__ import annotations

from crmdrop.mail.headers import find_blank_line, read_header_summary
from crmdrop.mail.model import Mailbox

RAW = (
    b"Return-Path: <bounce@x.com>\r\n"
    b'From: "Doe, Jane" <Jane@Example.com>\r\n'
    b"To: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@xn--mller-kva.de>,\r\n"
    b"  bob@x.org\r\n"
    b"Cc: Ann <ann@y.org>\r\n"
    b"Reply-To: replies@x.com\r\n"
    b"Subject: =?utf-8?b?w4RuZGVydW5n?= of plan\r\n"
    b"Message-ID: <abc123@x.com>\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"Precedence: bulk\r\n"
    b"List-Id: Sales <sales.lists.x.com>\r\n"
    b"\r\n"
    b"From: not-a-header@body.com\r\n"
)


def test_it_reads_authors_recipients_and_markers() -> None:
    s = read_header_summary(RAW)
    assert s.from_ == [Mailbox("Doe, Jane", "jane@example.com")]
    assert s.to == [Mailbox("Jürgen Müller", "j@müller.de"), Mailbox("", "bob@x.org")]
    assert s.cc == [Mailbox("Ann", "ann@y.org")]
    assert s.reply_to == [Mailbox("", "replies@x.com")]
    assert s.message_id == "abc123@x.com"
    assert s.auto_submitted == "auto-replied"
    assert s.precedence == "bulk"
    assert s.list_id == "Sales <sales.lists.x.com>"
    assert s.subject == "Änderung of plan"
    assert s.has_header("return-path") and s.has_header("Return-Path")
    assert not s.has_header("x-mailer")


def test_it_does_not_read_the_body() -> None:
    s = read_header_summary(RAW)
    assert all(mb.address != "not-a-header@body.com" for mb in s.from_)


def test_empty_message_id_and_missing_headers_give_none() -> None:
    s = read_header_summary(b"Message-ID: <>\r\nSubject: x\r\n\r\nbody")
    assert s.message_id is None
    assert s.from_ == [] and s.auto_submitted is None and s.list_id is None


def test_junk_does_not_raise() -> None:
    for raw in (b"", b"\x00\xff\xfe", b"no colon here\n\nbody", b":\n:", b"From \n\n"):
        read_header_summary(raw)


def test_a_message_starting_with_a_blank_line_has_no_headers_as_the_parser_says() -> None:
    from crmdrop.mail.parse import parse_message

    raw = b"\r\nFrom: a@b.example\r\nTo: c@d.example\r\nSubject: x\r\n\r\nbody\r\n"
    assert read_header_summary(raw).from_ == parse_message(raw).from_ == []


def test_every_header_reads_decoded_though_only_asked_ones_are_decoded() -> None:
    s = read_header_summary(RAW + b"")
    assert s.header("SUBJECT") == "Änderung of plan"
    assert s.headers["to"] == ["Jürgen Müller <j@xn--mller-kva.de>, bob@x.org"]
    assert s.headers.get("x-mailer") is None and "x-mailer" not in s.headers
    assert list(s.headers) == [
        "return-path",
        "from",
        "to",
        "cc",
        "reply-to",
        "subject",
        "message-id",
        "auto-submitted",
        "precedence",
        "list-id",
    ]
    assert dict(s.headers)["subject"] == ["Änderung of plan"]


def test_the_blank_line_is_found_where_the_pattern_would_find_it() -> None:
    import itertools
    import re

    pattern = re.compile(rb"\r?\n\r?\n")
    cases = [b"", b"a", b"\n\n", b"a\r\n\r\nb", b"a\n\r\nb", b"a\r\n\nb", b"\r\r\n\n", b"a\rb\n"]
    cases += [b"x\r\ny\r\n\r\n\r\n", b"\n\r\n\n", b"\r\n\r\n"]
    cases += [b"h\r\n\r\nbody\n\nmore", b"h\n\nbody\r\n\r\nmore"]  # both kinds, either first
    # every string of up to 7 bytes over a, CR, LF
    cases += [bytes(p) for n in range(8) for p in itertools.product(b"a\r\n", repeat=n)]
    for data in cases:
        for start in range(len(data) + 1):
            m = pattern.search(data, start)
            want = (m.start(), m.end()) if m else None
            assert find_blank_line(data, start) == want, (data, start)
            assert find_blank_line(bytearray(data), start) == want, (data, start)
