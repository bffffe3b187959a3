"""parse_message reads every email file of the shared corpora without raising, and
without falling back to the empty parse (our failure, flagged in `failure`)."""

from __future__ import annotations

import pytest

from corpora_util import corpora_dir, iter_corpus_emails
from crmdrop.mail.headers import read_header_summary
from crmdrop.mail.parse import parse_message


@pytest.mark.slow
def test_it_parses_every_corpus_email_without_an_exception() -> None:
    assert corpora_dir().is_dir(), f"corpora not found at {corpora_dir()}"
    read = with_address = 0
    for path, raw in iter_corpus_emails():
        parsed = parse_message(raw)  # must not raise
        assert parsed.failure is None, f"{path}: {parsed.failure}"
        read_header_summary(raw)  # must not raise either
        assert parsed.content_hash, path
        read += 1
        if parsed.addresses:
            with_address += 1
    print(f"\ncorpora: {read} email files read, {with_address} yielded at least one address")
    assert read > 900
