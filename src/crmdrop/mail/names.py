"""What a person's name is not (SPEC §4.3): the words clients write around one.

A name read from a forwarded block or a lead-in line ("Le 28/10/2021 12:46, « John Doe »
<…> a écrit :") is checked here; the vocabulary of what is *not* a name is the label table's.
"""

from __future__ import annotations

import re
from functools import cache

from crmdrop.mail.labels import FIELD_LABELS, SEPARATORS, WROTE_PATTERNS

__all__ = ["INVISIBLE", "QUOTES", "is_usable_name"]


def _long(word: str) -> bool:
    """Long enough to be no one's name: 5+ letters, or 2+ in scripts without spaces
    between short words (CJK, Hangul); "Post", "Dari", "Prima" may be names."""
    return len(word) >= 5 or (len(word) >= 2 and ord(word[0]) >= 0x2E80)


# Quote marks in any script, the BOM and bidirectional marks: never part of a name.
QUOTES = "\"'„“”«»‹›「」『』‚‘’"
_NOT_IN_NAMES = QUOTES.replace("'", "").replace("’", "")  # O'Brien, D’Angelo
INVISIBLE = "\ufeff\u200b\u200e\u200f"
_TIME_OR_DATE = re.compile(
    r"\d{1,2}[:.h]\d{2}|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|(?<!\d)(?:19|20)\d{2}(?!\d)"
)
_TOKEN = re.compile(r"[^\W\d_]+")


@cache
def _not_name_words() -> frozenset[str]:
    """Words of the label table that are never part of a person's name: field labels and
    the words of lead-in lines and separators ("escribió", "użytkownik", "időpontban")."""
    words: set[str] = set()
    for row in FIELD_LABELS.values():
        for labels in row.values():
            words |= {lbl.rstrip(":").casefold() for lbl in labels if _long(lbl.rstrip(":"))}
    texts = [t for ts in WROTE_PATTERNS.values() for t in ts]
    texts += [p for rows in SEPARATORS.values() for p, _, _ in rows]
    for text in texts:
        for word in _TOKEN.findall(re.sub(r"\{\w+\}", " ", text)):
            if _long(word):
                words.add(word.casefold())
    return frozenset(words)


def is_usable_name(name: str) -> bool:
    """Is this a person's name (SPEC §4.3), not the debris of a lead-in or header line?

    Never a label, a date, a time, a lead-in verb, quote marks, guillemets, a BOM or an
    address: a name that has any of these is no name, and the local part names the contact.
    """
    n = name.strip()
    if not n or "@" in n or n.endswith((":", "：")):
        return False
    if any(ch in n for ch in _NOT_IN_NAMES + INVISIBLE) or _TIME_OR_DATE.search(n):
        return False
    if not any(ch.isalpha() for ch in n):
        return False
    words = _not_name_words()
    return not any(tok.casefold() in words for tok in _TOKEN.findall(n))
