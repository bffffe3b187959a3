"""A short, bounded fuzz run (hypothesis, derandomized) over `parse_message` and `decide`:
corpus messages mutated and spliced with known-hostile fragments never make our code
raise nor fall back to the empty parse. The long run is `bench/fuzz_parse.py`."""

from __future__ import annotations

import random
from functools import lru_cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.corpora_util import iter_corpus_emails
from tests.fuzzing import HOSTILE, check_message, mutate


@lru_cache(maxsize=1)
def seeds() -> list[bytes]:
    found = [raw[:100_000] for _path, raw in iter_corpus_emails()]
    assert len(found) > 900, "the shared corpora are missing"
    return found


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(index=st.integers(min_value=0), salt=st.integers(min_value=0, max_value=2**32))
def test_mutated_corpus_messages_never_break_the_parser_or_decide(index: int, salt: int) -> None:
    pool = seeds()
    data = mutate(pool[index % len(pool)], random.Random(salt))
    check_message(data, salt, limit=0)  # no clock here: speed is the bench's


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    parts=st.lists(
        st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=300)), min_size=1, max_size=12
    )
)
def test_messages_built_of_hostile_fragments_never_break_the_parser(parts: list[bytes]) -> None:
    check_message(b"From: a@b.com\r\n" + b"".join(parts), len(parts), limit=0)
