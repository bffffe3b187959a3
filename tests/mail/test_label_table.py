"""Every row of the language/client tables compiles into a working matcher.

These tests build a block from each row (so a typo that breaks a row's regex fails
here); the real-world spellings are checked by the fixtures in test_languages.py and
test_clients.py.
"""

from __future__ import annotations

import pytest

from crmdrop.mail.forwarded import find_forwarded_blocks
from crmdrop.mail.labels import FIELD_LABELS, SEPARATORS, WROTE_PATTERNS
from crmdrop.mail.model import Mailbox

SEPARATOR_ROWS = [(lang, phrase) for lang, rows in SEPARATORS.items() for phrase, _, _ in rows]
WROTE_ROWS = [(lang, t) for lang, ts in WROTE_PATTERNS.items() for t in ts]
AUTHOR = "Kunde Eins <customer@client.example>"


@pytest.mark.parametrize(("lang", "phrase"), SEPARATOR_ROWS)
def test_each_separator_row_introduces_a_header_block(lang: str, phrase: str) -> None:
    labels = FIELD_LABELS.get(lang, FIELD_LABELS["en"])
    text = (
        f"Mine\n\n---------- {phrase} ----------\n"
        f"{labels['from'][0]}: {AUTHOR}\n{labels['date'][0]}: 05.03.2024 14:30\n"
        f"{labels['to'][0]}: sales@ourco.example\n{labels['subject'][0]}: Angebot\n\nTheirs\n"
    )
    [block] = find_forwarded_blocks(text)
    assert block.from_ == Mailbox("Kunde Eins", "customer@client.example")
    assert block.body == "Theirs"


@pytest.mark.parametrize(("lang", "template"), WROTE_ROWS)
def test_each_wrote_row_matches_its_own_shape(lang: str, template: str) -> None:
    line = (
        template.replace("{date}", "05.03.2024 14:30")
        .replace("{who}", AUTHOR)
        .replace("{any}", "x")
    )
    text = f"Mine\n\n{line}\n> Theirs\n"
    blocks = find_forwarded_blocks(text)
    assert blocks, line
    assert blocks[0].from_ is not None and blocks[0].from_.address == "customer@client.example"
    assert blocks[0].body == "Theirs"
