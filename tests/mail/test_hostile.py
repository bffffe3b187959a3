"""Hostile input found by fuzzing: each message here broke or stalled the parser once.

Bounded by construction (caps and budgets), not by a clock: each test asserts what a
cap keeps and that whatever can be read still is.
"""

from __future__ import annotations

from typing import cast

import pytest

from crmdrop.mail.addresses import MAX_TEXT_ADDRESSES, extract_addresses_from_text
from crmdrop.mail.encoding import decode_bytes, decode_header_str
from crmdrop.mail.forwarded import MAX_BLOCKS, split_own_text
from crmdrop.mail.headers import MAX_IDS, read_header_summary
from crmdrop.mail.parse import MAX_MIME_NESTING, parse_message

BAD_CHARSETS = ["idna", "undefined", "punycode", "base64", "hex", "zlib", "rot13", "utf\x008"]


@pytest.mark.parametrize("charset", BAD_CHARSETS)
def test_a_body_in_a_charset_that_is_no_text_charset_is_read_with_its_headers(
    charset: str,
) -> None:
    raw = (
        b"From: a@b.com\r\nContent-Type: text/plain; charset="
        + charset.encode()
        + b"\r\n\r\n\xff jane@x.com\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.failure is None
    assert [m.address for m in parsed.from_] == ["a@b.com"]
    assert "jane@x.com" in parsed.text
    assert any("charset" in d for d in parsed.defects)
    assert decode_bytes(b"\xff", charset)[0]  # never raises, always some text


@pytest.mark.parametrize("charset", BAD_CHARSETS)
def test_an_encoded_word_in_a_bad_charset_is_read_at_smtp_time_and_by_the_parser(
    charset: str,
) -> None:
    raw = f"From: a@b.com\r\nX-Note: =?{charset}?B?/w==?=\r\n\r\nhi\r\n".encode()
    summary = read_header_summary(raw)
    assert [m.address for m in summary.from_] == ["a@b.com"]
    parsed = parse_message(raw)
    assert parsed.failure is None
    assert parsed.header("x-note") is not None
    assert decode_header_str(f"=?{charset}?Q?=FF?=")


def test_the_header_reader_lets_a_fault_of_ours_raise_instead_of_reading_no_headers() -> None:
    # A str where bytes belong stands for any bug: it must surface (451 at SMTP), not turn
    # into a message without a From that the sender check would refuse for good.
    with pytest.raises(TypeError):
        read_header_summary(cast(bytes, "From: a@b.com\r\n\r\nhi"))


def _nested(levels: int) -> bytes:
    head = b"From: a@b.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    head += b"Content-Type: multipart/mixed; boundary=top\r\n\r\n--top\r\n"
    head += b"Content-Type: text/plain\r\n\r\nCall jane@x.com about it.\r\n--top\r\n"
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(levels)
    )
    inner = b"Content-Type: text/plain\r\n\r\ndeep inside\r\n"
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(levels)))
    tail = b"--top\r\nContent-Type: text/plain\r\n\r\nAnd bob@y.com after it.\r\n--top--\r\n"
    return head + opening + inner + closing + tail


def test_a_thousand_nested_multiparts_are_cut_and_the_rest_of_the_message_is_read() -> None:
    parsed = parse_message(_nested(1000))
    assert parsed.failure is None
    assert [m.address for m in parsed.from_] == ["a@b.com"]
    found = {a.address for a in parsed.addresses}
    assert {"jane@x.com", "bob@y.com"} <= found
    assert any("nesting" in d for d in parsed.defects)


def test_nesting_within_the_limit_is_read_whole() -> None:
    parsed = parse_message(_nested(MAX_MIME_NESTING - 5))
    assert "deep inside" in parsed.text
    assert not any("nesting deeper" in d for d in parsed.defects)


def test_a_references_header_of_100000_ids_gives_its_root_and_newest_ids() -> None:
    ids = [f"<id{i}@x.org>" for i in range(100_000)]
    raw = ("From: a@b.com\r\nReferences: " + " ".join(ids + ids[:10]) + "\r\n\r\nhi\r\n").encode()
    parsed = parse_message(raw)
    assert len(parsed.references) == MAX_IDS
    assert parsed.references[0] == "id0@x.org"
    assert parsed.references[-1] == "id99999@x.org"
    assert len(set(parsed.references)) == MAX_IDS


def test_ten_thousand_addresses_in_a_body_are_capped_and_the_cap_recorded() -> None:
    body = "\n".join(f"person{i}@example{i % 97}.com" for i in range(10_000))
    assert len(extract_addresses_from_text(body)) == MAX_TEXT_ADDRESSES
    parsed = parse_message(f"From: a@b.com\r\n\r\n{body}\r\n".encode())
    assert sum(a.where == "body:text" for a in parsed.addresses) == MAX_TEXT_ADDRESSES
    assert any("addresses" in d for d in parsed.defects)


def test_five_thousand_forwarded_blocks_are_capped() -> None:
    block = (
        "---------- Forwarded message ---------\n"
        "From: Jane <jane{i}@x.com>\nDate: Mon, 1 Jan 2024 10:00\nSubject: s\nTo: <b@y.com>\n\n"
        "text {i}\n"
    )
    text = "".join(block.format(i=i) for i in range(5_000))
    _own, blocks = split_own_text(text, "Fwd: s")
    assert 0 < len(blocks) <= MAX_BLOCKS


def test_fifty_thousand_quote_characters_in_a_header_are_read() -> None:
    raw = b"From: a@b.com\r\nTo: " + b'"' * 50_000 + b" <c@d.com>\r\n\r\nhi\r\n"
    parsed = parse_message(raw)
    assert [m.address for m in parsed.from_] == ["a@b.com"]
    summary = read_header_summary(raw)
    assert [m.address for m in summary.from_] == ["a@b.com"]
