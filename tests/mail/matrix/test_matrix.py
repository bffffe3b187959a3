"""The generative matrix: every client layout × every language × variations, rendered from
the label table (matrix/render.py) and read back by `parse_message`.

The deterministic sweep prints a score (blocks, authors, names, dates, subjects, Cc read
right) and each must be ≥ 99 %; hypothesis draws further combinations (authors, dates,
subjects, recipients, labels) and each must be read entirely right.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from crmdrop.mail.names import is_usable_name
from matrix.render import CC, CLIENTS, LANGUAGES, PEOPLE, RECIPIENTS, VARIATIONS, Case, render
from matrix.score import METRICS, Score, Verdict, check, score
from matrix.sweep import sweep_cases


@cache
def sweep() -> tuple[Score, dict[tuple[str, str], list[Verdict]]]:
    return score(sweep_cases())


def test_the_sweep_covers_every_client_language_and_variation() -> None:
    cases = sweep_cases()
    assert {(c.client, c.language) for c in cases} == {(c, lg) for c in CLIENTS for lg in LANGUAGES}
    for variation in VARIATIONS:
        assert {c.client for c in cases if c.variation == variation} == set(CLIENTS)
        assert {c.language for c in cases if c.variation == variation} == set(LANGUAGES)
    assert len(LANGUAGES) >= 40


def test_the_sweep_reads_at_least_99_percent_of_every_metric_right() -> None:
    total, _ = sweep()
    print(f"\nmatrix sweep ({len(CLIENTS)} clients × {len(LANGUAGES)} languages):")
    print("  " + total.summary())
    for v in total.misses[:30]:
        print(f"  miss {v.case.client}/{v.case.language}/{v.case.variation}: {v.wrong}")
    for metric in METRICS:
        assert total.total[metric] > 0, metric
        assert total.percent(metric) >= 99.0, metric


def test_every_name_the_matrix_produces_is_a_name() -> None:
    _, cells = sweep()
    names = [n for verdicts in cells.values() for v in verdicts for n in v.names]
    assert len(names) > 3000
    bad = sorted({n for n in names if not is_usable_name(n)})
    assert bad == []


_WHEN = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0)
)
_SUBJECTS = st.sampled_from(
    ["Angebot 4711", "Re: offer", "Q4: prices & terms", "件名のテスト", "Счёт № 12", "Ü-Bahn"]
)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    client=st.sampled_from(sorted(CLIENTS)),
    language=st.sampled_from(LANGUAGES),
    variation=st.sampled_from(VARIATIONS),
    author=st.sampled_from(PEOPLE),
    to=st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3, unique=True),
    cc=st.lists(st.sampled_from(CC), max_size=2, unique=True),
    when=_WHEN,
    subject=_SUBJECTS,
    pick=st.integers(0, 7),
)
def test_any_drawn_forward_is_read_entirely_right(
    client: str,
    language: str,
    variation: str,
    author: object,
    to: list[object],
    cc: list[object],
    when: datetime,
    subject: str,
    pick: int,
) -> None:
    case = Case(client, language, variation, author, tuple(to), tuple(cc), when, subject, pick)  # type: ignore[arg-type]
    verdict = check(render(case))
    assert verdict.wrong == [], (case, render(case).body)
