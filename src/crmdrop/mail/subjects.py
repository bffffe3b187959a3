"""Reply/forward subject prefixes, in many languages, as data — for case and opportunity titles."""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "FORWARD_PREFIXES",
    "FORWARD_PREFIX_RE",
    "REPLY_PREFIXES",
    "REPLY_PREFIX_RE",
    "strip_subject_prefixes",
]

# Prefixes mail clients put before a subject when replying, per language family.
REPLY_PREFIXES: Final[tuple[str, ...]] = (
    "Re",
    "RE",
    "Aw",
    "AW",
    "Antw",
    "Antwort",
    "Sv",
    "SV",
    "Vs",
    "VS",
    "Rif",
    "RIF",
    "Odp",
    "Odg",
    "Vá",
    "Vá:",
    "Ynt",
    "Yan",
    "YNT",
    "Cevap",
    "Atb",
    "Vast",
    "Vs",
    "Відп",
    "Ответ",
    "Отв",
    "Отг",
    "Απ",
    "ΑΠ",
    "Σχετ",
    "回复",
    "回覆",
    "答复",
    "答覆",
    "返信",
    "RE",
    "回信",
    "답장",
    "회신",
    "رد",
    "תגובה",
    "השב",
    "Trả lời",
    "TL",
    "Balas",
    "Bls",
    "Svar",
    "Vast",
    "Odpowiedź",
    "Răspuns",
    "R",
    "Atsakymas",
    "Atb",
)
# Prefixes put before a forwarded subject.
FORWARD_PREFIXES: Final[tuple[str, ...]] = (
    "Fwd",
    "FWD",
    "Fw",
    "FW",
    "Fwrd",
    "WG",
    "Wg",
    "Wtr",
    "TR",
    "Tr",
    "Trs",
    "RV",
    "Rv",
    "Enc",
    "ENC",
    "I",
    "Inoltro",
    "VS",
    "VB",
    "Vb",
    "Doorst",
    "Dtsd",
    "Doorgestuurd",
    "PD",
    "Pd",
    "Prz",
    "PRZ",
    "Przekaż",
    "Továbbítás",
    "Továbbított",
    "Továbbítva",
    "TOV",
    "Fwd",
    "İlt",
    "ILT",
    "Ilt",
    "Пересл",
    "Перес",
    "Fw",
    "Προώθ",
    "ΠΡΘ",
    "转发",
    "轉寄",
    "轉發",
    "転送",
    "FW",
    "전달",
    "إعادة توجيه",
    "הועבר",
    "Chuyển tiếp",
    "TT",
    "Terusan",
    "Trs",
    "Vl",
    "VL",
    "Välitä",
    "Edasi",
    "Proslijeđeno",
    "Posred",
    "Pārs",
    "Persiųsta",
    "Redirecționare",
    "Redirectionat",
    "Fwd",
    "Videresend",
    "Vidarebefordra",
    "VS",
    "Doorsturen",
    "Weitergeleitet",
)

_SEP = r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*"


def _alternation(words: tuple[str, ...]) -> str:
    uniq = sorted({w.rstrip(":") for w in words}, key=len, reverse=True)
    return "|".join(re.escape(w) for w in uniq)


REPLY_PREFIX_RE: Final[re.Pattern[str]] = re.compile(
    r"^\s*(?:" + _alternation(REPLY_PREFIXES) + r")" + _SEP, re.IGNORECASE
)
FORWARD_PREFIX_RE: Final[re.Pattern[str]] = re.compile(
    r"^\s*(?:" + _alternation(FORWARD_PREFIXES) + r")" + _SEP, re.IGNORECASE
)
_ANY_PREFIX = re.compile(
    r"^\s*(?:" + _alternation(REPLY_PREFIXES + FORWARD_PREFIXES) + r")" + _SEP, re.IGNORECASE
)
_BRACKETED = re.compile(
    r"^\s*\[(?:" + _alternation(REPLY_PREFIXES + FORWARD_PREFIXES) + r")" + _SEP + r"(.*)\]\s*$",
    re.IGNORECASE,
)


def strip_subject_prefixes(subject: str) -> str:
    """Remove every leading Re:/Fwd:/AW:/WG:/TR:/RV:/回复:/… prefix, repeated and mixed.

    Tags such as ``[EXTERNAL]`` or ``[ticket #12]`` are left alone (they may matter to
    the reader); a prefix after such a tag is not removed either. ``Re[2]:`` and
    ``Fwd (3):`` counters are understood. Whitespace is collapsed.
    """
    s = " ".join(subject.split())
    while True:
        m = _ANY_PREFIX.match(s)
        if m:
            s = s[m.end() :]
            continue
        b = _BRACKETED.match(s)  # "[Fwd: subject]" as old clients wrote it
        if b:
            s = b.group(1).strip()
            continue
        break
    return s.strip()
