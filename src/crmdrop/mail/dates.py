"""Dates as forwarded blocks write them, in many languages: "Fri, Apr 26, 2013 at 8:13 PM",
"Am Mo., 1. Jan. 2024 um 10:00 Uhr", "2024年1月1日(月) 10:00", "1 января 2024 г., в 10:00".

Month names are data (one row per language); the parser is a tolerant token scan
that finds day, month, year and time in any order. Returns None rather than guess.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timedelta, timezone
from typing import Final

__all__ = ["MONTHS", "parse_loose_date"]

# Month names and abbreviations, index 1..12, per language. Matching uses prefixes of
# at least 3 letters, so "janv.", "Januar", "janeiro" all work.
MONTHS: Final[dict[str, tuple[str, ...]]] = {
    "en": (
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ),
    "de": (
        "januar",
        "februar",
        "märz",
        "april",
        "mai",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "dezember",
    ),
    "fr": (
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ),
    "es": (
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ),
    "it": (
        "gennaio",
        "febbraio",
        "marzo",
        "aprile",
        "maggio",
        "giugno",
        "luglio",
        "agosto",
        "settembre",
        "ottobre",
        "novembre",
        "dicembre",
    ),
    "pt": (
        "janeiro",
        "fevereiro",
        "março",
        "abril",
        "maio",
        "junho",
        "julho",
        "agosto",
        "setembro",
        "outubro",
        "novembro",
        "dezembro",
    ),
    "nl": (
        "januari",
        "februari",
        "maart",
        "april",
        "mei",
        "juni",
        "juli",
        "augustus",
        "september",
        "oktober",
        "november",
        "december",
    ),
    "sv": (
        "januari",
        "februari",
        "mars",
        "april",
        "maj",
        "juni",
        "juli",
        "augusti",
        "september",
        "oktober",
        "november",
        "december",
    ),
    "da": (
        "januar",
        "februar",
        "marts",
        "april",
        "maj",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "december",
    ),
    "no": (
        "januar",
        "februar",
        "mars",
        "april",
        "mai",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "desember",
    ),
    "fi": (
        "tammikuu",
        "helmikuu",
        "maaliskuu",
        "huhtikuu",
        "toukokuu",
        "kesäkuu",
        "heinäkuu",
        "elokuu",
        "syyskuu",
        "lokakuu",
        "marraskuu",
        "joulukuu",
    ),
    "pl": (
        "stycznia",
        "lutego",
        "marca",
        "kwietnia",
        "maja",
        "czerwca",
        "lipca",
        "sierpnia",
        "września",
        "października",
        "listopada",
        "grudnia",
    ),
    "pl2": (
        "styczeń",
        "luty",
        "marzec",
        "kwiecień",
        "maj",
        "czerwiec",
        "lipiec",
        "sierpień",
        "wrzesień",
        "październik",
        "listopad",
        "grudzień",
    ),
    "cs": (
        "ledna",
        "února",
        "března",
        "dubna",
        "května",
        "června",
        "července",
        "srpna",
        "září",
        "října",
        "listopadu",
        "prosince",
    ),
    "hu": (
        "január",
        "február",
        "március",
        "április",
        "május",
        "június",
        "július",
        "augusztus",
        "szeptember",
        "október",
        "november",
        "december",
    ),
    "ro": (
        "ianuarie",
        "februarie",
        "martie",
        "aprilie",
        "mai",
        "iunie",
        "iulie",
        "august",
        "septembrie",
        "octombrie",
        "noiembrie",
        "decembrie",
    ),
    "hr": (
        "siječnja",
        "veljače",
        "ožujka",
        "travnja",
        "svibnja",
        "lipnja",
        "srpnja",
        "kolovoza",
        "rujna",
        "listopada",
        "studenoga",
        "prosinca",
    ),
    "ru": (
        "января",
        "февраля",
        "марта",
        "апреля",
        "мая",
        "июня",
        "июля",
        "августа",
        "сентября",
        "октября",
        "ноября",
        "декабря",
    ),
    "ru2": (
        "январь",
        "февраль",
        "март",
        "апрель",
        "май",
        "июнь",
        "июль",
        "август",
        "сентябрь",
        "октябрь",
        "ноябрь",
        "декабрь",
    ),
    "uk": (
        "січня",
        "лютого",
        "березня",
        "квітня",
        "травня",
        "червня",
        "липня",
        "серпня",
        "вересня",
        "жовтня",
        "листопада",
        "грудня",
    ),
    "bg": (
        "януари",
        "февруари",
        "март",
        "април",
        "май",
        "юни",
        "юли",
        "август",
        "септември",
        "октомври",
        "ноември",
        "декември",
    ),
    "tr": (
        "ocak",
        "şubat",
        "mart",
        "nisan",
        "mayıs",
        "haziran",
        "temmuz",
        "ağustos",
        "eylül",
        "ekim",
        "kasım",
        "aralık",
    ),
    "el": (
        "ιανουαρίου",
        "φεβρουαρίου",
        "μαρτίου",
        "απριλίου",
        "μαΐου",
        "ιουνίου",
        "ιουλίου",
        "αυγούστου",
        "σεπτεμβρίου",
        "οκτωβρίου",
        "νοεμβρίου",
        "δεκεμβρίου",
    ),
    "id": (
        "januari",
        "februari",
        "maret",
        "april",
        "mei",
        "juni",
        "juli",
        "agustus",
        "september",
        "oktober",
        "november",
        "desember",
    ),
    "sk": (
        "januára",
        "februára",
        "marca",
        "apríla",
        "mája",
        "júna",
        "júla",
        "augusta",
        "septembra",
        "októbra",
        "novembra",
        "decembra",
    ),
    "sl": (
        "januar",
        "februar",
        "marec",
        "april",
        "maj",
        "junij",
        "julij",
        "avgust",
        "september",
        "oktober",
        "november",
        "december",
    ),
    "et": (
        "jaanuar",
        "veebruar",
        "märts",
        "aprill",
        "mai",
        "juuni",
        "juuli",
        "august",
        "september",
        "oktoober",
        "november",
        "detsember",
    ),
    "lv": (
        "janvāris",
        "februāris",
        "marts",
        "aprīlis",
        "maijs",
        "jūnijs",
        "jūlijs",
        "augusts",
        "septembris",
        "oktobris",
        "novembris",
        "decembris",
    ),
    "lt": (
        "sausio",
        "vasario",
        "kovo",
        "balandžio",
        "gegužės",
        "birželio",
        "liepos",
        "rugpjūčio",
        "rugsėjo",
        "spalio",
        "lapkričio",
        "gruodžio",
    ),
    "ar": (
        "يناير",
        "فبراير",
        "مارس",
        "أبريل",
        "مايو",
        "يونيو",
        "يوليو",
        "أغسطس",
        "سبتمبر",
        "أكتوبر",
        "نوفمبر",
        "ديسمبر",
    ),
    "he": (
        "ינואר",
        "פברואר",
        "מרץ",
        "אפריל",
        "מאי",
        "יוני",
        "יולי",
        "אוגוסט",
        "ספטמבר",
        "אוקטובר",
        "נובמבר",
        "דצמבר",
    ),
}
# Abbreviations that are not a prefix of the full month name.
MONTH_ABBREVIATIONS: Final[dict[str, int]] = {"mrt": 3}

_MONTH_LOOKUP: dict[str, int] = {}
for _names in MONTHS.values():
    for _idx, _name in enumerate(_names, start=1):
        _MONTH_LOOKUP.setdefault(_name, _idx)
        for _cut in (3, 4):
            _MONTH_LOOKUP.setdefault(_name[:_cut], _idx)
# Known clashes resolved in favour of the common reading.
_MONTH_LOOKUP.update({"mar": 3, "mai": 5, "may": 5, "jun": 6, "jul": 7, "maj": 5})
_MONTH_LOOKUP.update(MONTH_ABBREVIATIONS)

_RFC2822 = re.compile(r"^\s*(?:[a-z]{3},?\s*)?\d{1,2}\s+[a-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}", re.I)
_CJK = re.compile(r"(\d{4})\s*[年년]\s*(\d{1,2})\s*[月월]\s*(\d{1,2})\s*[日일]")
_VI = re.compile(r"(\d{1,2})\s+(?:tháng|thg)\s+(\d{1,2}),?\s*(?:năm\s+)?(\d{4})")
_SPACED_DMY = re.compile(r"(?<!\d)(\d{1,2})\.\s+(\d{1,2})\.\s+(\d{4})")
_ISO = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_NUMERIC = re.compile(r"(?<![\d:])(\d{1,2})[./-](\d{1,2})[./-](\d{2,4})(?!\d)")
_TIME = re.compile(
    r"(\d{1,2})[:.h](\d{2})(?:[:.](\d{2}))?\s*([ap]\.?\s?m\.?(?![a-z])|午前|午後|오전|오후|上午|下午|م|ص)?"
)
_AMPM_BEFORE = re.compile(r"(午前|午後|오전|오후|上午|下午)\s*(\d{1,2})[:：](\d{2})")
_TZ = re.compile(r"(?:GMT|UTC)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?|([+-])(\d{2})(\d{2})\b")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_YEAR = re.compile(r"(?<!\d)(19\d{2}|20\d{2})(?!\d)")
_PM = ("pm", "午後", "오후", "下午", "م")
_AM = ("am", "午前", "오전", "上午", "ص")


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


def _month_of(word: str) -> int | None:
    if word[:1] == "ב" and word[1:] in _MONTH_LOOKUP:
        word = word[1:]  # Hebrew "במרץ" = "in March"
    if len(word) < 3:
        return None
    return _MONTH_LOOKUP.get(word) or _MONTH_LOOKUP.get(word[:4]) or _MONTH_LOOKUP.get(word[:3])


def _ymd(low: str) -> tuple[int, int, int, str] | None:
    """(year, month, day, the text left for the time) or None."""
    m = _CJK.search(low)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3)), low[: m.start()] + low[m.end() :]
    m = _VI.search(low)
    if m:
        return int(m.group(3)), int(m.group(2)), int(m.group(1)), low[: m.start()] + low[m.end() :]
    m = _ISO.search(low)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3)), low[: m.start()] + low[m.end() :]
    m = _NUMERIC.search(low)
    if m:
        a, b, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        y = y + 2000 if y < 100 else y
        # US clients write M/D/Y with slashes; the rest of the world D.M.Y.
        us = "/" in m.group(0) and a <= 12 and (b > 12 or " am" in low or " pm" in low)
        month, day = (a, b) if us else (b, a)
        return y, month, day, low[: m.start()] + low[m.end() :]
    for w in _WORD.finditer(low):
        named = _month_of(w.group(0))
        if not named:
            continue
        yd = _YEAR.search(low)
        if not yd:
            return None
        before, after = low[: w.start()], low[w.end() :]
        dm = re.search(r"(?<!\d)(\d{1,2})(?:[\s.,]|de\b|of\b)*$", before)
        da = re.match(r"\W{0,3}(\d{1,2})(?!\d)", after)
        if dm and dm.start(1) != yd.start(1):
            day = int(dm.group(1))
        elif da:
            day = int(da.group(1))
        else:
            return None
        rest = low[: yd.start()] + " " + low[yd.end() :]
        return int(yd.group(1)), named, day, rest
    return None


def parse_loose_date(text: str | None) -> datetime | None:
    """Best-effort datetime from a localized date line; None when unsure."""
    if not text:
        return None
    s = text.strip()
    if _RFC2822.match(s):
        try:
            return email.utils.parsedate_to_datetime(s)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    low = _SPACED_DMY.sub(r"\1.\2.\3", s.lower())
    found = _ymd(low)
    if found is None:
        return None
    year, month, day, rest = found
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    hour = minute = second = 0
    am = _AMPM_BEFORE.search(rest)
    tm = _TIME.search(rest)
    if am:
        hour, minute = int(am.group(2)), int(am.group(3))
        if am.group(1) in _PM and hour < 12:
            hour += 12
    elif tm:
        hour, minute, second = int(tm.group(1)), int(tm.group(2)), int(tm.group(3) or 0)
        mer = (tm.group(4) or "").replace(".", "").replace(" ", "")
        if mer in _PM and hour < 12:
            hour += 12
        elif mer in _AM and hour == 12:
            hour = 0
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=_tz(s))
    except ValueError:
        return None
