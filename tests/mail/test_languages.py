"""Forwarded and quoted-reply header blocks in every supported language (fixtures/languages).

Each language has two fixtures written with the clients' localized strings: an
Outlook-style forward block (separator, From/Sent/To/Cc/Subject labels, a localized
date) and a Gmail-style "On <date>, <who> wrote:" line. All name the same people and
the same moment (5 March 2024, 14:30), so one set of expectations serves every row.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from crmdrop.mail.forwarded import split_own_text
from crmdrop.mail.labels import FIELD_LABELS, WROTE_PATTERNS

FIXTURES = Path(__file__).parent / "fixtures" / "languages"
LANGUAGES = sorted(p.name.removesuffix("_forward.txt") for p in FIXTURES.glob("*_forward.txt"))
REQUIRED = [
    "en",
    "de",
    "fr",
    "es",
    "it",
    "pt",
    "pt-BR",
    "nl",
    "sv",
    "da",
    "no",
    "fi",
    "pl",
    "cs",
    "sk",
    "hu",
    "ro",
    "hr",
    "sl",
    "et",
    "lv",
    "lt",
    "ru",
    "uk",
    "bg",
    "tr",
    "el",
    "ja",
    "zh",
    "ko",
    "ar",
    "he",
    "vi",
    "id",
]


def test_every_required_language_has_fixtures_and_table_rows() -> None:
    assert set(REQUIRED) <= set(LANGUAGES)
    for lang in REQUIRED:
        assert (FIXTURES / f"{lang}_reply.txt").is_file()
        assert lang in FIELD_LABELS
        assert lang in WROTE_PATTERNS or lang == "pt-BR"


def _when(dt: datetime | None) -> tuple[int, int, int, int, int] | None:
    return (dt.year, dt.month, dt.day, dt.hour, dt.minute) if dt else None


@pytest.mark.parametrize("lang", LANGUAGES)
def test_forward_block_gives_author_recipients_date_and_subject(lang: str) -> None:
    own, blocks = split_own_text((FIXTURES / f"{lang}_forward.txt").read_text(encoding="utf-8"))
    assert own == "Please file this under the customer."
    [block] = blocks
    assert block.from_ is not None
    assert (block.from_.name, block.from_.address) == ("Kunde Eins", "customer@client.example")
    assert [m.address for m in block.to] == ["sales@ourco.example"]
    assert [m.address for m in block.cc] == ["carla@client.example"]
    assert block.subject == "Angebot 4711"
    assert _when(block.date) == (2024, 3, 5, 14, 30)
    assert block.body == "Original words of the customer."
    assert block.language == lang.split("-")[0] or (lang, block.language) == ("pt-BR", "pt")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_wrote_line_gives_the_quoted_author_and_date(lang: str) -> None:
    own, blocks = split_own_text((FIXTURES / f"{lang}_reply.txt").read_text(encoding="utf-8"))
    assert own == "Thanks, noted."
    [block] = blocks
    assert block.kind == "reply"
    assert block.from_ is not None
    assert (block.from_.name, block.from_.address) == ("Kunde Eins", "customer@client.example")
    assert _when(block.date) == (2024, 3, 5, 14, 30)
    assert block.body == "Original words of the customer.\nSecond line."
