"""Parse rendered forwards back and score what was read right, per metric and per cell."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crmdrop.dropbox.names import contact_name
from crmdrop.mail.model import ForwardedBlock
from crmdrop.mail.parse import parse_message
from matrix.render import Case, Rendered, render

METRICS = ("blocks", "authors", "names", "dates", "subjects", "cc")


@dataclass
class Verdict:
    case: Case
    wrong: list[str]  # the metrics read wrong, with what was read
    counted: tuple[str, ...]  # the metrics this case checks
    names: tuple[str, ...] = ()  # every contact name the blocks would create


def _name_of(block: ForwardedBlock) -> str:
    assert block.from_ is not None
    if block.from_.address is None:
        return block.from_.name
    return contact_name(block.from_.name, block.from_.address)


def check(rendered: Rendered) -> Verdict:
    """Compare the parser's reading of one rendered message with what was rendered."""
    exp = rendered.expected
    parsed = parse_message(rendered.raw)
    blocks = parsed.forwarded
    counted = ["blocks", "authors", "names", "dates"]
    if exp.subject is not None:
        counted.append("subjects")
    if exp.cc is not None:
        counted.append("cc")
    names = tuple(
        contact_name(mb.name, mb.address)
        for b in blocks
        for mb in (b.from_, *b.to, *b.cc)
        if mb is not None and mb.address
    )
    block = blocks[exp.index] if len(blocks) > exp.index else None
    if block is None or block.from_ is None:
        return Verdict(rendered.case, [f"{m}: no block" for m in counted], tuple(counted), names)
    wrong = []
    if block.from_.address != exp.address:
        wrong.append(f"authors: {block.from_.address!r}")
    if _name_of(block) != exp.name:
        wrong.append(f"names: {_name_of(block)!r}")
    got = block.date.replace(tzinfo=None) if block.date else None
    if got != exp.when:
        wrong.append(f"dates: {got} from {block.date_text!r}")
    if exp.subject is not None and block.subject != exp.subject:
        wrong.append(f"subjects: {block.subject!r}")
    if exp.cc is not None:
        cc = frozenset(m.address for m in block.cc if m.address)
        if cc != exp.cc:
            wrong.append(f"cc: {sorted(cc)}")
    if exp.nested is not None:
        counted.append("blocks")
        inner = blocks[exp.index + 1] if len(blocks) > exp.index + 1 else None
        if inner is None or inner.from_ is None or inner.from_.address != exp.nested.address:
            wrong.append("blocks: nested forward not found")
    return Verdict(rendered.case, wrong, tuple(counted), names)


@dataclass
class Score:
    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))
    misses: list[Verdict] = field(default_factory=list)

    def add(self, v: Verdict) -> None:
        bad = {w.split(":", 1)[0] for w in v.wrong}
        for m in v.counted:
            self.total[m] += 1
            self.right[m] += m not in bad
        if v.wrong:
            self.misses.append(v)

    def percent(self, metric: str) -> float:
        t = self.total[metric]
        return 100.0 * self.right[metric] / t if t else 100.0

    def summary(self) -> str:
        return "  ".join(
            f"{m} {self.right[m]}/{self.total[m]} ({self.percent(m):.1f} %)" for m in METRICS
        )


def score(cases: Iterable[Case]) -> tuple[Score, dict[tuple[str, str], list[Verdict]]]:
    """Score every case; also return the verdicts per (client, language) cell."""
    total = Score()
    cells: dict[tuple[str, str], list[Verdict]] = {}
    for case in cases:
        v = check(render(case))
        total.add(v)
        cells.setdefault((case.client, case.language), []).append(v)
    return total, cells
