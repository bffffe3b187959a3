"""`message_bytes` writes a parsed message back to exactly the bytes `as_bytes()` writes:
the content hash of an attached message is taken over them, and must not change."""

from __future__ import annotations

import email
from email import policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpora_util import iter_corpus_emails
from crmdrop.mail.rewrite import message_bytes

_HEADER_NAMES = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"),
    min_size=1,
    max_size=40,
)


@pytest.mark.slow
def test_every_corpus_message_and_part_is_written_as_as_bytes_writes_it() -> None:
    compared = 0
    for path, raw in iter_corpus_emails():
        msg = email.message_from_bytes(raw, policy=policy.compat32)
        for part in msg.walk():
            try:
                expected: bytes | type[Exception] = part.as_bytes()
            except Exception as exc:  # the stdlib fails on some hostile parts; so must we
                expected = type(exc)
            try:
                got: bytes | type[Exception] = message_bytes(part)
            except Exception as exc:
                got = type(exc)
            assert got == expected, path
            compared += 1
    assert compared > 5000


# Folded header values: words, blanks and line breaks in any order and length.
_FOLDED = st.lists(
    st.sampled_from([" ", "\t", "\r\n ", "\n\t", "\r", "\x0b", ":", ",", "word", "y" * 30]),
    max_size=20,
).map("".join)


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(
    name=_HEADER_NAMES,
    value=st.one_of(st.text(st.characters(max_codepoint=127), max_size=120), _FOLDED),
)
def test_any_ascii_header_is_written_as_as_bytes_writes_it(name: str, value: str) -> None:
    msg = email.message.Message(policy=policy.compat32)
    msg[name] = value
    msg.set_payload("body\r\nline\rtwo\n")
    try:
        expected: bytes | type[Exception] = msg.as_bytes()
    except Exception as exc:
        expected = type(exc)
    try:
        got: bytes | type[Exception] = message_bytes(msg)
    except Exception as exc:
        got = type(exc)
    assert got == expected
