"""Dates as forwarded blocks write them, in many languages: "Fri, Apr 26, 2013 at 8:13 PM",
"Am Mo., 1. Jan. 2024 um 10:00 Uhr", "2024年1月1日(月) 10:00", "1 января 2024 г., в 10:00".

Month, weekday and AM/PM names are not typed here: they come from CLDR (through Babel)
for every language the label table names, built once on first use. The parser is a
tolerant token scan that finds day, month, year and time in any order, preferring the
block's own language where names clash (Croatian "listopad" is October, Polish November).
Returns None rather than guess.
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache

from babel import Locale

from crmdrop.mail.labels import FIELD_LABELS, LOCALES

__all__ = [
    "DateNames",
    "date_names",
    "locale_of",
    "parse_loose_date",
    "time_of_day",
    "warm_date_tables",
]

_WIDTHS = ("wide", "abbreviated")
_CONTEXTS = ("format", "stand-alone")


def locale_of(language: str) -> str:
    """The CLDR locale id of a label-table language ("no" → "nb", "pt-BR" → "pt_BR")."""
    return LOCALES.get(language, language.replace("-", "_"))


def _fold(word: str) -> str:
    return word.casefold().replace(".", "").replace("\u05f3", "").replace("\u00a0", " ").strip()


@dataclass(frozen=True)
class DateNames:
    """Month and weekday words of one language (or of all of them, merged)."""

    months: dict[str, int]  # exact names and abbreviations → 1..12
    prefixes: dict[str, int]  # 3- and 4-letter starts of the names → 1..12
    weekdays: frozenset[str]


def _locale_names(locale: Locale) -> DateNames:
    months: dict[str, int] = {}
    prefixes: dict[str, int] = {}
    weekdays: set[str] = set()
    for ctx in _CONTEXTS:
        for width in _WIDTHS:
            for idx, name in locale.months[ctx][width].items():
                word = _fold(name)
                months.setdefault(word, idx)
                for cut in (3, 4):
                    if len(word) > cut:
                        prefixes.setdefault(word[:cut], idx)
            for name in locale.days[ctx][width].values():
                weekdays.add(_fold(name))
    return DateNames(months, prefixes, frozenset(weekdays))


@cache
def date_names() -> dict[str, DateNames]:
    """Per language of the label table, plus ``""`` for all of them merged (table order)."""
    out: dict[str, DateNames] = {}
    merged_m: dict[str, int] = {}
    merged_p: dict[str, int] = {}
    merged_w: set[str] = set()
    for language in FIELD_LABELS:
        names = _locale_names(Locale.parse(locale_of(language)))
        out[language] = names
        for k, v in names.months.items():
            merged_m.setdefault(k, v)
        for k, v in names.prefixes.items():
            merged_p.setdefault(k, v)
        merged_w |= names.weekdays
    out[""] = DateNames(merged_m, merged_p, frozenset(merged_w))
    return out


@cache
def _period_regex() -> tuple[re.Pattern[str], frozenset[str], frozenset[str]]:
    """AM/PM words of every language (CLDR day periods): after a time, or before it in the
    languages that write them first (Korean "오후 9:26", Chinese "下午9:26")."""
    am: set[str] = set()
    pm: set[str] = set()
    before: set[str] = set()
    for language in FIELD_LABELS:
        locale = Locale.parse(locale_of(language))
        periods = locale.day_periods.get("format", {})
        hm = str(locale.datetime_skeletons.get("hm", locale.time_formats["short"]))
        first = hm.lstrip().startswith("a")
        for width in ("abbreviated", "wide"):
            table = periods.get(width, {})
            if "am" in table and "pm" in table:
                words = {table["am"].casefold(), table["pm"].casefold()}
                am.add(table["am"].casefold())
                pm.add(table["pm"].casefold())
                if first:  # "de. 9:26" would be Hungarian, but "de 12:30" is Spanish
                    before |= {w for w in words if not w.replace(".", "").isascii()}

    def alt(words: set[str]) -> str:
        ordered = sorted(words, key=len, reverse=True)
        return "|".join(re.escape(w).replace(r"\.", r"\.?").replace(r"\ ", r"\s?") for w in ordered)

    time = (
        r"(?:(?P<pre>" + alt(before) + r")\s*)?"
        r"(?P<h>\d{1,2})[:.h：](?P<m>\d{2})(?:[:.](?P<s>\d{2}))?"
        r"(?:\s*(?P<post>" + alt(am | pm) + r")(?![^\W\d_]))?"
    )
    return re.compile(time), frozenset(_fold(w) for w in am), frozenset(_fold(w) for w in pm)


@cache
def time_of_day() -> re.Pattern[str]:
    """A time of day with its AM/PM word and zone, in any table language: where a
    "<date> <time> <name>" run splits between the date and the name."""
    return re.compile(
        _period_regex()[0].pattern
        + r"(?:\s*(?:\(?(?:GMT|UTC)\s*[+-]?\s*\d{0,2}:?\d{0,2}\)?|[+-]\d{4}|[A-Z]{2,5}T))?"
        + r"(?:\s*(?:uhr|h|ч\.?|น\.))?",
        re.IGNORECASE,
    )


_RFC2822 = re.compile(r"^\s*(?:[a-z]{3},?\s*)?\d{1,2}\s+[a-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}", re.I)
_CJK = re.compile(r"(\d{4})\s*[年년]\s*(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]")
_VI = re.compile(r"(\d{1,2})\s+(?:tháng|thg)\s+(\d{1,2}),?\s*(?:năm\s+)?(\d{4})")
_SPACED_DMY = re.compile(r"(?<!\d)(\d{1,2})\.\s+(\d{1,2})\.\s+(\d{4})")
_SPACED_YMD = re.compile(r"(?<!\d)(\d{4})\.\s+(\d{1,2})\.\s+(\d{1,2})\.")
_ISO = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_NUMERIC = re.compile(r"(?<![\d:])(\d{1,2})[./-](\d{1,2})[./-](\d{2,4})(?!\d)")
_TZ = re.compile(r"(?:GMT|UTC)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?|([+-])(\d{2})(\d{2})\b")
# A word: letters with their combining marks (Devanagari, Thai and Arabic vowel signs are
# marks, not letters, so ``[^\W\d_]+`` would cut "नवंबर" apart).
_WORD = re.compile(r"[^\s\d!-/:-@\[-`{-~\u060c\u3001\uff0c\u3002\u200b-\u200f\u00a0]+")
_YEAR = re.compile(r"(?<!\d)(19\d{2}|20\d{2})(?!\d)")
# Bidirectional marks (Arabic, Hebrew, Persian dates) and the like carry no meaning here.
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\u061c\u200b\u200c\u200d\ufeff"), None)


def _ascii_digits(text: str) -> str:
    """Arabic-Indic, Persian, Devanagari … digits as ASCII; invisible marks removed."""
    if text.isascii():
        return text
    text = text.translate(_INVISIBLE)
    return "".join(
        str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch for ch in text
    )


def _tz(text: str) -> timezone | None:
    m = _TZ.search(text)
    if not m:
        return None
    if m.group(1):
        sign = -1 if m.group(1) == "-" else 1
        h, mi = int(m.group(2)), int(m.group(3) or 0)
    else:
        sign = -1 if m.group(4) == "-" else 1
        h, mi = int(m.group(5)), int(m.group(6))
    if h > 14 or mi > 59:
        return None
    return timezone(sign * timedelta(hours=h, minutes=mi))


def _named_month(low: str, language: str) -> tuple[int, re.Match[str]] | None:
    """The month word of a date line: exact names before prefixes, a weekday name
    ("mar." is Tuesday in Spanish) only when nothing else names a month."""
    tables = date_names()
    order = [tables[language], tables[""]] if language in tables else [tables[""]]
    words = list(_WORD.finditer(low))
    for names in order:
        for exact in (True, False):
            fallback: tuple[int, re.Match[str]] | None = None
            for w in words:
                word = w.group(0).replace("\u05f3", "")
                if word[:1] == "ב" and word[1:] in names.months:
                    word = word[1:]  # Hebrew "בנובמבר" = "in November"
                if len(word) < (2 if exact and not word.isascii() else 3):
                    continue  # Hindi "मई" and Persian "مه" (May) are whole names
                month = (
                    names.months.get(word)
                    if exact
                    else names.prefixes.get(word[:4]) or names.prefixes.get(word[:3])
                )
                if not month:
                    continue
                if word not in names.weekdays:
                    return month, w
                fallback = fallback or (month, w)
            if fallback is not None:
                return fallback
    return None


@cache
def _month_first(language: str) -> bool:
    """Does the language write numeric dates month first (en: 11/23/21)?"""
    pattern = str(Locale.parse(locale_of(language)).date_formats["short"].pattern)
    return pattern.lstrip("'").lower().startswith("m")


def _numeric(m: re.Match[str], low: str, language: str) -> tuple[int, int, int]:
    """(year, month, day) of a D.M.Y / M/D/Y match."""
    a, b, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    y = y + 2000 if y < 100 else y
    # US clients write M/D/Y with slashes (and a 12-hour clock); the rest of the world D.M.Y,
    # and so does every language whose CLDR short date is day first, AM/PM or not.
    us = "/" in m.group(0) and a <= 12 and (b > 12 or " am" in low or " pm" in low)
    if us and b <= 12 and language in FIELD_LABELS and not _month_first(language):
        us = False
    return (y, a, b) if us else (y, b, a)


def _ymd(low: str, language: str) -> tuple[int, int, int, str] | None:
    """(year, month, day, the text left for the time) or None."""
    for rx, order in ((_CJK, (1, 2, 3)), (_VI, (3, 2, 1)), (_ISO, (1, 2, 3))):
        m = rx.search(low)
        if m:
            y, mo, d = (int(m.group(i)) for i in order)
            return y, mo, d, low[: m.start()] + " " + low[m.end() :]
    numeric = [m for m in _NUMERIC.finditer(low) if _numeric(m, low, language)[1] <= 12]
    # "6. juni 2021, 21.05.00": a dotted time is no date when a month is named
    first = next((m for m in numeric if len(m.group(3)) == 4), None)
    if first is None and numeric and _named_month(low, language) is None:
        first = numeric[0]
    if first is not None:
        y, month, day = _numeric(first, low, language)
        return y, month, day, low[: first.start()] + " " + low[first.end() :]
    named = _named_month(low, language)
    if named is None:
        return None
    month, w = named
    yd = _YEAR.search(low)
    if not yd:
        return None
    before, after = low[: w.start()], low[w.end() :]
    dm = re.search(r"(?<!\d)(\d{1,2})(?:[\s.,]|de\b|of\b|th\b|st\b|nd\b|rd\b)*$", before)
    da = re.match(r"\W{0,3}(\d{1,2})(?!\d)", after)
    if dm and dm.start(1) != yd.start(1):
        day = int(dm.group(1))
    elif da:
        day = int(da.group(1))
    else:
        return None
    return int(yd.group(1)), month, day, low[: yd.start()] + " " + low[yd.end() :]


def _time_of(rest: str) -> tuple[int, int, int]:
    rx, am, pm = _period_regex()
    tm = rx.search(rest)
    if tm is None:
        return 0, 0, 0
    hour, minute, second = int(tm.group("h")), int(tm.group("m")), int(tm.group("s") or 0)
    period = _fold(tm.group("post") or tm.group("pre") or "")
    if period in pm and hour < 12:
        hour += 12
    elif period in am and hour == 12:
        hour = 0
    return hour, minute, second


def parse_loose_date(text: str | None, language: str = "") -> datetime | None:
    """Best-effort datetime from a localized date line; None when unsure.

    `language` (a label-table language) decides month names that mean different months
    in different languages; without it the table's order decides.
    """
    if not text:
        return None
    s = _ascii_digits(text.strip()).replace("\u202f", " ").replace("\u00a0", " ")
    if _RFC2822.match(s):
        try:
            return email.utils.parsedate_to_datetime(s)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    low = _SPACED_YMD.sub(r"\1-\2-\3", _SPACED_DMY.sub(r"\1.\2.\3", s.casefold()))
    found = _ymd(low, language)
    if found is None:
        return None
    year, month, day, rest = found
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    hour, minute, second = _time_of(rest)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=_tz(s))
    except ValueError:
        return None


def warm_date_tables() -> None:
    """Build the CLDR tables now (a worker's start-up) rather than on the first message:
    loading every table language's locale data takes about a second."""
    date_names()
    time_of_day()
    for language in FIELD_LABELS:
        _month_first(language)
