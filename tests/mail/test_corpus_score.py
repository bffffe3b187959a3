"""Corpus score: the original author and recipients we read vs the corpora's expectations."""

from __future__ import annotations

import pytest
from corpus_score import score_all


@pytest.mark.slow
def test_it_reads_the_original_author_in_at_least_98_percent_of_corpus_items() -> None:
    right = total = 0
    lines = []
    for sc in score_all():
        right += sc.right
        total += sc.total
        lines.append(f"{sc.name:32} {sc.right:4}/{sc.total:<4} {sc.percent:6.1f} %")
        lines.extend(f"    miss: {m}" for m in sc.misses)
    overall = 100.0 * right / total
    print("\n" + "\n".join(lines) + f"\n{'overall':32} {right:4}/{total:<4} {overall:6.1f} %")
    assert total > 150
    assert overall >= 98.0
