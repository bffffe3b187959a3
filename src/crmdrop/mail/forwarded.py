"""Find inline forwarded and quoted-reply header blocks in a body — one generic matcher.

All client and language knowledge is data in `crmdrop.mail.labels`; this module only
compiles it (once, at import) and walks the lines:

1. a *separator* line (``---------- Forwarded message ---------``, ``-----Original
   Message-----``, ``Begin forwarded message:``, ``________________``) followed by a
   header block;
2. a *header block* alone (``From: … / Sent: … / To: … / Subject: …``, in any language
   of the table, lines quoted with ``>`` or not, values wrapped onto the next line,
   blank lines between fields, bold ``*From:*`` markers);
3. a *wrote line* (``On <date>, <who> wrote:`` per language, possibly wrapped).

Blocks are returned outermost first; each one's `body` is that message's own text up
to the next block.
"""

from __future__ import annotations

import html as html_lib
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from crmdrop.mail.addresses import parse_address_list, parse_mailbox
from crmdrop.mail.dates import parse_loose_date, time_of_day
from crmdrop.mail.html import html_to_text
from crmdrop.mail.labels import (
    END_MARKERS,
    FIELD_LABELS,
    NOTES_FORWARDED_BY,
    OUTLOOK_DATE_LABELS,
    SEPARATORS,
    SIGNATURE_MARKERS,
    TIME_JOINERS,
    UNDERSCORE_SEPARATOR,
    WROTE_PATTERNS,
)
from crmdrop.mail.model import ForwardedBlock, Mailbox
from crmdrop.mail.names import is_usable_name
from crmdrop.mail.subjects import FORWARD_PREFIX_RE, REPLY_PREFIX_RE

__all__ = [
    "find_forwarded_blocks",
    "find_forwarded_blocks_html",
    "split_own_text",
    "strip_signature",
]

# --- compiled tables ------------------------------------------------------------------

_LABEL_FIELD: dict[str, str] = {}
_LABEL_LANGS: dict[str, list[str]] = {}
for _lang, _fields in FIELD_LABELS.items():
    for _field, _labels in _fields.items():
        for _label in _labels:
            _key = _label.rstrip(":").casefold()
            _LABEL_FIELD.setdefault(_key, _field)
            _LABEL_LANGS.setdefault(_key, []).append(_lang)


_TrieNode = dict[str, "_TrieNode"]


def _trie(words: Iterable[str], *, flexible_space: bool) -> str:
    r"""A regex source matching exactly the words of `words` (as one alternation of them
    would, a space as ``\s+`` when `flexible_space`), written as a trie.

    ``re`` tries an alternation's branches one by one at every position: 500 labels cost
    about 10 µs per line. As a trie each character is tried once per branching point.
    Used where only *whether* some word matches counts, never which one.
    """
    root: _TrieNode = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def source(node: _TrieNode) -> str:
        branches = [
            (r"\s+" if ch == " " and flexible_space else re.escape(ch)) + source(child)
            for ch, child in node.items()
            if ch
        ]
        if not branches:
            return ""
        alt = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here and longer ones go on
            return ("(?:" + alt + ")?") if len(branches) == 1 else alt + "?"
        return alt

    return source(root)


_LABEL_ALT = "|".join(
    re.escape(lbl).replace(r"\ ", r"\s+") for lbl in sorted(_LABEL_FIELD, key=len, reverse=True)
)
# "From: x", "*From:* x", "**From:** x", "De : x", "From:\tx", "发件人：x"
_LABEL_LINE = re.compile(
    r"^[ \t]*(?:\*{1,2}|_)?(?P<label>" + _LABEL_ALT + r")(?:\*{1,2}|_)?[ \t\u00a0]*[:：]"
    r"(?:\*{1,2}|_)?[ \t\u00a0]*(?P<value>.*)$",
    re.IGNORECASE,
)
# The same test, without saying which label: matches exactly the lines _LABEL_LINE matches
# (the value part of that pattern matches any rest of a line), 20 times faster on prose.
_LABEL_GATE = re.compile(
    r"[ \t]*(?:\*{1,2}|_)?(?:"
    + _trie(_LABEL_FIELD, flexible_space=True)
    + r")(?:\*{1,2}|_)?[ \t\u00a0]*[:：]",
    re.IGNORECASE,
)


def _is_label_line(text: str) -> bool:
    """Does `text` (one line) start with a field label of the table ("From:", "件名：")?"""
    return ("：" in text or ":" in text) and _LABEL_GATE.match(text) is not None


_SEP_DECOR = r"[ \t\-_=*~#<>\[\]]*"
_SEP_LIST: list[tuple[re.Pattern[str], str, str, str]] = []
for _lang, _rows in SEPARATORS.items():
    for _phrase, _client, _kind in _rows:
        _SEP_LIST.append(
            (
                re.compile(
                    r"^"
                    + _SEP_DECOR
                    + re.escape(_phrase).replace(r"\ ", r"\s+")
                    + r"[ \t]*(?:[:：][ \t]*)?"
                    + _SEP_DECOR
                    + r"$",
                    re.IGNORECASE,
                ),
                _client,
                _kind,
                _lang,
            )
        )
# One alternation as a cheap pre-filter.
_SEP_ANY = re.compile(
    r"^"
    + _SEP_DECOR
    + r"(?:"
    + _trie((p for rows in SEPARATORS.values() for p, _, _ in rows), flexible_space=True)
    + r")",
    re.IGNORECASE,
)
_END = re.compile(
    r"^"
    + _SEP_DECOR
    + r"(?:"
    + "|".join(re.escape(p) for p in END_MARKERS)
    + r")"
    + r"[ \t]*:?"
    + _SEP_DECOR
    + r"$",
    re.IGNORECASE,
)
_UNDERSCORE = re.compile(r"^[ \t]*" + UNDERSCORE_SEPARATOR + r"[ \t]*$")
# Lotus/HCL Notes: "----- Forwarded by Jane Doe/ACME on 03/15/2021 10:22 AM -----"
_NOTES_SEP = re.compile(
    r"^[ \t]*-{3,}\s*(?:" + "|".join(map(re.escape, NOTES_FORWARDED_BY)) + r")\s.*-{3,}[ \t]*$",
    re.IGNORECASE,
)
# Yahoo writes a forwarded block's fields on one line: "From: A <a@x>To: b@yCc: …Sent: …".
# Labels are found as the table spells them (case and all) wherever they are glued on.
_GLUED = re.compile(
    r"(?:\*{1,2})?(?P<label>"
    + "|".join(
        re.escape(lbl.rstrip(":")).replace(r"\ ", r"\s+")
        for lbl in sorted(
            {lbl.rstrip(":") for row in FIELD_LABELS.values() for ls in row.values() for lbl in ls},
            key=len,
            reverse=True,
        )
    )
    + r")(?:\*{1,2})?[ \t]?[:：]"
)
# Any of the three separator tests at once (most lines are none): one match per line.
_SEP_GATE = re.compile(
    "|".join(
        f"(?{'i' if rx.flags & re.IGNORECASE else ''}:{rx.pattern})"
        for rx in (_SEP_ANY, _UNDERSCORE, _NOTES_SEP)
    )
)
# The first character of a stripped line that `_SEP_GATE` can match: a decoration
# (`_SEP_DECOR`; "_" and "-" begin the other two tests) or a separator phrase's first
# letter, in any case as `re` folds it (the same IGNORECASE as the phrases').
_SEP_FIRST = re.compile(
    "["
    + re.escape(
        " \t-_=*~#<>[]"
        + "".join(sorted({p[0] for rows in SEPARATORS.values() for p, _, _ in rows}))
    )
    + "]",
    re.IGNORECASE,
)


class _FirstChars(dict[str, bool]):
    """Whether a line beginning with this character can be a separator (`_SEP_FIRST`),
    kept per character: a dict look-up costs a few tens of ns, `_SEP_GATE.match` on a
    line of prose ≈ 600 ns on this project's machine, 40 µs of a 70-line message
    (docs/performance.md, session 7). At most `_FIRST_KEPT` characters are kept."""

    def __missing__(self, first: str) -> bool:
        found = _SEP_FIRST.match(first) is not None
        if len(self) < _FIRST_KEPT:
            self[first] = found
        return found


_FIRST_KEPT = 4096
_MAY_SEPARATE = _FirstChars()


_JOINERS = re.compile(
    r"^(?:" + "|".join(re.escape(j) for j in TIME_JOINERS) + r")\s+", re.IGNORECASE
)
_ZOHO_WROTE = re.compile(r"^-{2,}\s*(?P<inner>.+?)\s*-{2,}$")


def _wrote_regex(template: str) -> re.Pattern[str]:
    """Compile a WROTE_PATTERNS template; the final ":" is optional (checked by the caller)."""
    out = ["^"]
    parts = [p for p in re.split(r"(\{date\}|\{who\}|\{any\}| )", template) if p]
    for idx, part in enumerate(parts):
        if part == "{date}":
            out.append(r"(?P<date>.+?)")
        elif part == "{who}":
            out.append(r"(?P<who>.+?)")
        elif part == "{any}":
            out.append(r"[^<>:]+?")
        elif part == " ":
            prev = parts[idx - 1] if idx > 0 else ""
            nxt = parts[idx + 1] if idx + 1 < len(parts) else ""
            # Between two literal words, or after a leading word ("On {date}"), a space is
            # required; next to a placeholder ("…<a@b>wrote:") it may be missing.
            word_before = (
                not prev.startswith("{") and prev[-1:].isalpha() and ord(prev[-1]) < 0x2E80
            )
            word_after = not nxt.startswith("{") and nxt[:1].isalpha() and ord(nxt[0]) < 0x2E80
            out.append(r"\s+" if word_before and (word_after or idx == 1) else r"\s*")
        else:
            body = part.rstrip().rstrip(":：")
            lit = "".join(r"\s*[,，、]" if ch in ",，、" else re.escape(ch) for ch in body)
            # whole words only: "schrieb" must not match inside "geschrieben"
            if body[:1].isalpha() and ord(body[0]) < 0x2E80:
                lit = r"\b" + lit
            if body[-1:].isalpha() and ord(body[-1]) < 0x2E80:
                lit += r"\b"
            out.append(lit)
    out.append(r"\s*[:：]?\s*$")
    return re.compile("".join(out), re.IGNORECASE)


def _required_literal(template: str) -> str:
    """The longest fixed text of a template: a cheap substring test before the regex."""
    chunks = [c.strip(" :：,，") for c in re.split(r"\{\w+\}", template)]
    return max(chunks, key=len).casefold() if chunks else ""


@dataclass(frozen=True)
class _Wrote:
    regex: re.Pattern[str]
    language: str
    has_date: bool
    literal: str  # must occur in the line; "" for verb-less templates (need an address)
    anchored: bool  # starts with fixed words ("On …", "Am …"), not with {date}/{who}


# Patterns that name a date come first, in every language: a bare "{who} skrev:" (Swedish)
# must not take "På <date>, <who> skrev:" (Norwegian) whole, the date becoming the name.
_WROTE_LIST: list[_Wrote] = sorted(
    (
        _Wrote(_wrote_regex(t), lang, "{date}" in t, _required_literal(t), not t.startswith("{"))
        for lang, ts in WROTE_PATTERNS.items()
        for t in ts
    ),
    key=lambda w: not w.has_date,
)
# Whether any template's fixed text occurs in a (casefolded) line: one search instead of a
# substring test per template. Lines without any try only the verb-less templates.
_WROTE_LITERALS = re.compile(
    _trie((w.literal for w in _WROTE_LIST if w.literal), flexible_space=False)
)
_WROTE_BARE = [w for w in _WROTE_LIST if not w.literal]
# Forwarded/quoted blocks read per text: real threads have a few dozen at most; past
# this, the rest stays in the last block's body (each block costs milliseconds).
MAX_BLOCKS = 50
_WROTE_MAX = 320  # longer lines are prose, not a wrote line
_SIGNATURE = re.compile(r"^(?:" + "|".join(SIGNATURE_MARKERS) + r")$", re.IGNORECASE)
_DATE_END = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{2,4}|(?<!\d)(?:19|20)\d{2}(?!\d)")
_QUOTE_PREFIX = re.compile(r"^((?:[ \t]*>)+)[ \t]?")
_HAS_DIGIT = re.compile(r"\d")

_ADDRESS_FIELDS = ("from", "to", "cc")
# "Errors-To: …", "X-BeenThere: …": a raw header line, never a wrapped value.
# A label the table does not know, written with a full-width colon ("送信先：…"), is a field
# of its own too: it must not leak into the subject above it.
_OTHER_HEADER = re.compile(r"^(?:[A-Za-z][\w-]*:\s|[^\s：:]{1,12}\s?：)")


# --- lines ------------------------------------------------------------------------------


class _Line(NamedTuple):
    """One line of the text (a tuple: a body has thousands, made per message)."""

    depth: int
    text: str  # quote markers removed, right-stripped
    src: int  # the line's index in the text (a flattened line yields several _Lines)


def _unglue(text: str) -> list[str]:
    """Yahoo's flattened block as one line per field; any other line as it is.

    Only a line that starts with a label and has at least two more glued on is split;
    a field already seen is not split again (a subject may say "Re: …").
    """
    if text.count(":") + text.count("：") < 3 or not _is_label_line(text.lstrip(" *")):
        return [text]
    cuts: list[int] = []
    seen: set[str] = set()
    for m in _GLUED.finditer(text):
        field = _LABEL_FIELD.get(re.sub(r"\s+", " ", m.group("label")).casefold())
        if field is None or (field in seen and field != "ignore"):
            continue
        seen.add(field)
        if m.start() > 0 and text[: m.start()].strip():
            cuts.append(m.start())
        if field == "subject" and m.start() > 0:
            break  # the subject runs to the end of the line
    if len(cuts) < 2:
        return [text]
    bounds = [0, *cuts, len(text)]
    return [text[a:b].strip() for a, b in itertools.pairwise(bounds)]


# `_Line(…)` runs a Python-level __new__; a body has thousands of lines.
_new_line: Callable[[tuple[int, str, int]], _Line] = partial(tuple.__new__, _Line)


def _odd(text: str) -> bool:
    """Could `text` hold a line that is more than its right-stripped self: a quote marker,
    a no-break space or BOM to replace, a colon (a flattened block needs three)? Most
    lines of prose have none. (`in` on a str is a fast search; a regex class is not.)"""
    return ">" in text or ":" in text or "：" in text or "\u00a0" in text or "\ufeff" in text


def _split_lines(text: str) -> list[_Line]:
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    raws = text.split("\n")
    if not _odd(text):
        n = len(raws)
        plain = zip(itertools.repeat(0, n), map(str.rstrip, raws), range(n), strict=True)
        return list(map(_new_line, plain))
    out: list[_Line] = []
    for src, raw in enumerate(raws):
        if not _odd(raw):
            out.append(_new_line((0, raw.rstrip(), src)))
            continue
        quoted = ">" in raw and (raw[:1] == ">" or raw.lstrip(" \t")[:1] == ">")
        m = _QUOTE_PREFIX.match(raw) if quoted else None
        if m:
            depth = m.group(1).count(">")
            content = raw[m.end() :].rstrip()
        else:
            depth = 0
            content = raw.rstrip()
        if "\u00a0" in content:
            content = content.replace("\u00a0", " ")
        if "\ufeff" in content:
            content = content.replace("\ufeff", "")
        if len(content) < 40 or content.count(":") + content.count("：") < 3:
            out.append(_new_line((depth, content, src)))  # no room for a flattened block
            continue
        for part in _unglue(content):
            out.append(_new_line((depth, part, src)))
    return out


# --- header blocks ----------------------------------------------------------------------


@dataclass
class _Header:
    start: int
    end: int  # index after the last header line
    fields: list[tuple[str, str, str]]  # (field, label, value)
    language: str


def _label_match(text: str) -> tuple[str, str, str] | None:
    m = _LABEL_LINE.match(text) if _is_label_line(text) else None
    if not m:
        return None
    label = re.sub(r"\s+", " ", m.group("label")).casefold()
    field = _LABEL_FIELD.get(label)
    if field is None:
        return None
    return field, label, m.group("value").strip().strip("*").strip()


def _continues(field: str, prev_value: str, line: str) -> bool:
    """Is `line` the wrapped rest of the previous header value?"""
    s = line.strip()
    if not s or _label_match(s) is not None or _OTHER_HEADER.match(s):
        return False
    if field in _ADDRESS_FIELDS:
        if prev_value.endswith((",", ";", "<", "[", "(")) or prev_value.count(
            "<"
        ) > prev_value.count(">"):
            return True
        if prev_value.count("[") > prev_value.count("]"):
            return True
        if s.startswith(("<", "[", "(", "mailto:")):
            return True
        if "@" in s and len(s) < 200 and not s.endswith((".", "!", "?")):
            return True
        return bool(not prev_value and len(s) < 120)
    if field == "date":
        return not prev_value
    if field == "subject":
        return not prev_value
    return False


def _header_ok(
    lines: list[_Line],
    start: int,
    fields: list[tuple[str, str, str]],
    rows: list[int],
    *,
    after_separator: bool,
) -> bool:
    """Is this run of label lines a real header block (not prose with a "Date:" in it)?"""
    kinds = [f for f, _, _ in fields if f != "ignore"]
    value = {f: v for f, _, v in reversed(fields)}  # first occurrence wins
    others = {f for f in kinds if f in ("date", "to", "subject", "cc")}
    has_from = "from" in kinds
    from_addr = has_from and "@" in value["from"]
    to_addr = "to" in others and "@" in value["to"]
    adjacent = len(rows) >= 2 and rows[1] == rows[0] + 1
    if has_from and not value["from"].strip() and "to" not in others:
        return False
    if after_separator:
        return (has_from or "to" in others) and (len(set(kinds)) >= 2 or from_addr)
    if has_from and len(others) >= 2:
        return True
    if from_addr and others and adjacent:
        return True  # "From: a@b / Date: …"
    if to_addr and others & {"date", "subject"} and adjacent and not has_from:
        return True  # "Date: … / To: a@b" (talon: a header that lost its From line)
    if from_addr and len(kinds) == 1 and lines[start].depth > 0:
        # "> From: Jane <jane@x.com>" opening a quoted region
        k = start - 1
        while k >= 0 and not lines[k].text.strip():
            k -= 1
        return k < 0 or lines[k].depth < lines[start].depth
    return False


def _parse_header(
    lines: list[_Line], start: int, *, after_separator: bool, prefer: str = ""
) -> _Header | None:
    fields: list[tuple[str, str, str]] = []
    rows: list[int] = []
    j = start
    n = len(lines)
    depth = lines[start].depth if start < n else 0
    blank_run = 0
    while j < n and j < start + 60:
        line = lines[j]
        s = line.text.strip()
        if not s:
            blank_run += 1
            if blank_run > 3:
                break
            j += 1
            continue
        if abs(line.depth - depth) > 1 and fields:
            break
        lm = _label_match(s)
        if lm is not None:
            field, label, value = lm
            seen = {f for f, _, _ in fields}
            if field != "ignore" and field in seen and field in ("from", "subject"):
                break  # the next block starts here
            fields.append((field, label, value))
            rows.append(j)
            blank_run = 0
            j += 1
            continue
        if (
            fields
            and blank_run == 0
            and _OTHER_HEADER.match(s)
            and j + 1 < n
            and _label_match(lines[j + 1].text.strip()) is not None
        ):
            fields.append(("ignore", "", s))  # a field the table does not name: skip it
            rows.append(j)
            j += 1
            continue
        if fields and blank_run == 0:
            f, lbl, v = fields[-1]
            next_is_label = j + 1 < n and _label_match(lines[j + 1].text.strip()) is not None
            next_is_blank = j + 1 >= n or not lines[j + 1].text.strip()
            wrapped_subject = f == "subject" and len(v) >= 50 and len(s) < 80 and next_is_blank
            if _continues(f, v, s) or (
                (wrapped_subject or (f in ("subject", "date") and next_is_label))
                and not _OTHER_HEADER.match(s)
            ):
                fields[-1] = (f, lbl, (v + " " + s).strip())
                j += 1
                continue
        break
    if not fields or not _header_ok(lines, start, fields, rows, after_separator=after_separator):
        return None
    end = j
    while end > start and not lines[end - 1].text.strip():
        end -= 1
    # language: the row with most labels in common
    votes: dict[str, int] = {}
    for _, label, _ in fields:
        for lang in _LABEL_LANGS.get(label, ()):
            votes[lang] = votes.get(lang, 0) + 1
    order = list(FIELD_LABELS)
    # ties go to the separator's language, then to table order
    language = (
        max(votes, key=lambda lg: (votes[lg], lg == prefer, -order.index(lg))) if votes else "en"
    )
    return _Header(start, end, fields, language)


# --- wrote lines --------------------------------------------------------------------------


def _split_date_who(m: re.Match[str]) -> tuple[str | None, str]:
    """Split "<date> <who>" where the lazy regex cut it wrongly, using the time of day.

    "On Mon, Jan 1, 2024 at 10:00 AM John Doe <j@x.com> wrote:" — the date ends with the
    last time (plus zone) written before the name/address.
    """
    who = m.group("who")
    if "date" not in m.groupdict() or m.group("date") is None:
        return None, who.strip()
    date = m.group("date")
    between = m.string[m.end("date") : m.start("who")]
    if m.start("date") < m.start("who") and not any(ch.isalpha() for ch in between):
        combined = m.string[m.start("date") : m.end("who")]
        stop = len(combined)
        for marker in ("<", "@"):
            pos = combined.find(marker)
            if pos >= 0:
                stop = min(stop, pos)
        last = None
        for t in time_of_day().finditer(combined, 0, stop):
            last = t
        if last is None:  # no time of day: end the date after a numeric date or a year
            for t in _DATE_END.finditer(combined, 0, stop):
                last = t
        if last is not None:
            date, who = combined[: last.end()], combined[last.end() :]
    who = who.strip().lstrip(",，、:،").strip()
    who = _JOINERS.sub("", who)
    return date.strip().rstrip(",，、،").strip(), who


def _who_ok(who: str) -> bool:
    w = who.strip()
    if not w or len(w) > 200:
        return False
    if "@" in w:
        return True
    return len(w.split()) <= 6 and not w.endswith((".", "!", "?"))


def _quoted_after(lines: list[_Line], k: int, depth: int) -> bool:
    """Does quoted text (``>``, or the ``| `` some clients use) follow line `k`?"""
    while k < len(lines) and not lines[k].text.strip():
        k += 1
    if k >= len(lines):
        return False
    return lines[k].depth > depth or lines[k].text.lstrip().startswith("| ")


@dataclass(frozen=True)
class _WroteMatch:
    consumed: int  # lines
    who: str
    date: str | None
    language: str
    anchored: bool


def _match_wrote(lines: list[_Line], i: int) -> _WroteMatch | None:
    """The wrote line starting at line `i`, if any (it may be wrapped over 4 lines)."""
    first = lines[i].text.strip()
    if not first or len(first) > _WROTE_MAX:
        return None
    joined = first
    for extra in range(0, 4):
        if extra:
            if i + extra >= len(lines):
                break
            nxt = lines[i + extra].text.strip()
            if not nxt:
                break
            if lines[i + extra].depth != lines[i].depth and not nxt.endswith((":", "：")):
                break  # only a closing "> wrote:" may sit at another quote level
            joined = joined + " " + nxt
        if len(joined) > _WROTE_MAX:
            break
        candidate = html_lib.unescape(joined) if "&" in joined else joined
        zm = _ZOHO_WROTE.match(candidate) if candidate.startswith("--") else None
        if zm:
            candidate = zm.group("inner")
        candidate = candidate.lstrip("-–— ")  # Yahoo's "--- On … wrote:", Zimbra's "- Le …"
        colon = candidate.endswith((":", "："))
        if not colon and "@" not in candidate:
            continue
        quoted_next = partial(_quoted_after, lines, i + extra + 1, lines[i].depth)
        found = _match_templates(candidate, colon, quoted_next)
        if found is not None:
            who, date, w = found
            return _WroteMatch(extra + 1, who, date, w.language, w.anchored)
    return None


def _match_templates(
    candidate: str, colon: bool, quoted_next: Callable[[], bool]
) -> tuple[str, str | None, _Wrote] | None:
    """(who, date, template) of the first wrote template that reads `candidate` whole.

    The cheap conditions come before the regex: a template whose fixed text is missing,
    one that needs a date (with a digit) where the line has no digit, a verb-less one
    where neither a ":" ends the line nor quoted text follows.
    """
    folded = candidate.casefold()
    digit = _HAS_DIGIT.search(candidate) is not None
    bracketed = "@" in candidate and candidate.rstrip(":： ").endswith((">", ")", "]"))
    quoted: bool | None = None  # computed when first needed
    for w in _WROTE_LIST if _WROTE_LITERALS.search(folded) else _WROTE_BARE:
        if w.literal and w.literal not in folded:
            continue
        if (w.has_date and not digit) or (not w.literal and not bracketed):
            continue
        if not w.literal and not colon:
            quoted = quoted_next() if quoted is None else quoted
            if not quoted:
                continue
        m = w.regex.match(candidate)
        if not m:
            continue
        date, who = _split_date_who(m)
        if w.has_date and (date is None or not _HAS_DIGIT.search(date)):
            continue
        if not _who_ok(who):
            continue
        if "@" not in who or (not colon and not w.literal):
            # "Peter wrote:" counts only when it ends with ":" and quoted text follows
            # or a date is given; a line not ending with ":" needs the template's
            # fixed words or quoted text under it.
            quoted = quoted_next() if quoted is None else quoted
            if "@" not in who and (not colon or not (w.has_date or quoted)):
                continue
            if "@" in who and not colon and not (w.literal or quoted):
                continue
        return who, date, w
    return None


# --- blocks --------------------------------------------------------------------------------


@dataclass
class _Found:
    marker: int  # first line of the block (separator / wrote line / header)
    body_start: int
    depth: int
    kind: str
    client: str
    language: str
    header: _Header | None
    who: str | None
    date_text: str | None


def _next_nonblank(lines: list[_Line], i: int, limit: int = 4) -> int | None:
    j = i
    while j < len(lines) and j < i + limit:
        if lines[j].text.strip():
            return j
        j += 1
    return None


def _subject_kind(subject: str | None) -> str:
    """A header block is a forward unless the message containing it is a reply (Re:)."""
    if subject and FORWARD_PREFIX_RE.match(subject):
        return "forward"
    if subject and REPLY_PREFIX_RE.match(subject):
        return "reply"
    return "forward"


def _header_value(hdr: _Header, name: str) -> str | None:
    return next((v for f, _, v in hdr.fields if f == name and v), None)


def _scan(lines: list[_Line], subject: str | None) -> list[_Found]:
    """Every block in `lines`, outermost first: at each line a separator, else a header
    block without one, else a wrote line. The cheap test each step starts with comes
    first here: most lines are prose, and pass none."""
    scan = _Scan(lines, subject, _near_colon_end(lines))
    texts = [ln.text.strip() for ln in lines]
    near = scan.near_colon_end
    i = 0
    while i < len(lines) and len(scan.found) < MAX_BLOCKS:  # a budget: 5,000 blocks took 9 s
        s = texts[i]
        if not s:
            i += 1
            continue
        gated = len(s) < _SEP_MAX and _MAY_SEPARATE[s[0]] and _SEP_GATE.match(s)
        nxt = scan.separator(i, s) if gated else None
        if nxt is None and _is_label_line(s):
            nxt = scan.header_block(i)
        if nxt is None and near[i]:
            nxt = scan.wrote(i)
        i = nxt if nxt is not None else i + 1
    return scan.found


def _near_colon_end(lines: list[_Line]) -> list[bool]:
    """Per line: does it or one of the next three end as a wrote line can end: ":" (or
    anyhow, when it names an address), Zoho's "----"? Only there can a wrote line start."""
    near = [False] * len(lines)
    for k, (_, text, _) in enumerate(lines):
        if text.endswith(_WROTE_ENDS) or ("@" in text and len(text) < _WROTE_MAX):
            near[max(0, k - 3) : k + 1] = _NEAR[: k + 1 - max(0, k - 3)]
    return near


_WROTE_ENDS = (":", "：", "---")
_NEAR = [True] * 4


_SEP_MAX = 120  # longer lines are prose, not a separator


def _separator_kind(s: str) -> tuple[str, str, str] | None:
    """(client, kind, language) when the stripped line `s` is a separator line."""
    if len(s) >= _SEP_MAX or not _SEP_GATE.match(s):
        return None
    if _SEP_ANY.match(s):
        for rx, client, kind, lang in _SEP_LIST:
            if rx.match(s):
                return (client, kind, lang)
        return None
    if _UNDERSCORE.match(s):
        return ("outlook", "underscore", "")
    if _NOTES_SEP.match(s):
        return ("notes", "forward", "en")
    return None


@dataclass
class _Scan:
    """The state of one scan: the subject of the message that contains the next block
    (it decides forward vs reply) and the blocks found so far. Each step returns the
    line to go on from, or None when it found nothing at line `i`."""

    lines: list[_Line]
    container_subject: str | None
    near_colon_end: list[bool]
    found: list[_Found] = field(default_factory=list)

    def wrote_kind(self) -> str:
        """A wrote line quotes a reply, unless the message holding it is a forward: Outlook
        2019 forwards with a reply-style lead-in ("El … escribió:") in many languages."""
        subject = self.container_subject
        return "forward" if subject and FORWARD_PREFIX_RE.match(subject) else "reply"

    def separator(self, i: int, s: str) -> int | None:
        """1. a separator line, with the header fields (or the wrote line) under it."""
        sep = _separator_kind(s)
        if sep is None:
            return None
        lines, line = self.lines, self.lines[i]
        client, kind, lang = sep
        k = _next_nonblank(lines, i + 1)
        hdr = _parse_header(lines, k, after_separator=True, prefer=lang) if k is not None else None
        decorated = kind == "underscore" or any(c in s for c in "-_=*:：")
        if hdr is None and (kind == "underscore" or not decorated):
            return i + 1  # a bare "Original message" in prose is not a separator
        if hdr is not None:
            if kind in ("original", "underscore"):
                kind = _subject_kind(self.container_subject)
            self.container_subject = _header_value(hdr, "subject") or self.container_subject
            # the labels say more than the separator about the language
            depth = lines[k or i].depth
            self.found.append(
                _Found(i, hdr.end, depth, kind, client, hdr.language, hdr, None, None)
            )
            return hdr.end
        kind = "forward" if kind == "forward" else "reply"
        # Yandex / Mail.ru: the separator is followed by "<date>, <who>:" instead of fields.
        w = _match_wrote(lines, k) if k is not None else None
        if w is not None and k is not None:
            end = k + w.consumed
            self.found.append(_Found(i, end, line.depth, kind, client, lang, None, w.who, w.date))
            return end
        self.found.append(_Found(i, i + 1, line.depth, kind, client, lang, None, None, None))
        return i + 1

    def header_block(self, i: int) -> int | None:
        """2. a header block without a separator."""
        hdr = _parse_header(self.lines, i, after_separator=False)
        if hdr is None:
            return None
        kind = _subject_kind(self.container_subject)
        self.container_subject = _header_value(hdr, "subject") or self.container_subject
        outlook = any(lbl in OUTLOOK_DATE_LABELS for _, lbl, _ in hdr.fields)
        client = "outlook" if outlook else "generic"
        depth = self.lines[i].depth
        self.found.append(_Found(i, hdr.end, depth, kind, client, hdr.language, hdr, None, None))
        return hdr.end

    def wrote(self, i: int) -> int | None:
        """3. a wrote line (it ends with ":" on this line or one of the next three)."""
        if not self.near_colon_end[i]:
            return None
        lines = self.lines
        w = _match_wrote(lines, i)
        if w is None:
            return None
        if w.consumed > 1 and not w.anchored:
            # "Hello" + "On … wrote:": the wrote line starts on the next line.
            later = _match_wrote(lines, i + 1)
            complete = later is not None and (later.date is not None or w.date is None)
            if later is not None and complete and 1 + later.consumed == w.consumed:
                return i + 1
        # the block's level is that of the quoted text under the wrote line
        k = _next_nonblank(lines, i + w.consumed)
        depth = max(lines[i].depth, lines[k].depth if k is not None else 0)
        end = i + w.consumed
        self.found.append(
            _Found(i, end, depth, self.wrote_kind(), "generic", w.language, None, w.who, w.date)
        )
        return end


def _body(lines: list[_Line], start: int, stop: int, depth: int) -> str:
    out: list[str] = []
    for ln in lines[start:stop]:
        if ln.text.strip() and (ln.depth < depth or _END.match(ln.text.strip())):
            break
        out.append(ln.text)
    return "\n".join(out).strip("\n").strip()


def _mailboxes(fields: list[tuple[str, str, str]], name: str) -> list[Mailbox]:
    out: list[Mailbox] = []
    for f, _, v in fields:
        if f == name and v:
            out.extend(parse_address_list(v))
    return out


def _to_block(lines: list[_Line], f: _Found, stop: int, index: int) -> ForwardedBlock:
    from_: Mailbox | None = None
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    subject: str | None = None
    date_text = f.date_text
    if f.header is not None:
        froms = _mailboxes(f.header.fields, "from")
        from_ = froms[0] if froms else None
        to = tuple(_mailboxes(f.header.fields, "to"))
        cc = tuple(_mailboxes(f.header.fields, "cc"))
        subject = next((v for fl, _, v in f.header.fields if fl == "subject"), None)
        date_text = next((v for fl, _, v in f.header.fields if fl == "date" and v), None)
    elif f.who:
        from_ = parse_mailbox(f.who)
        if from_ is not None and from_.address and not is_usable_name(from_.name):
            from_ = Mailbox("", from_.address)  # lead-in debris is no name (SPEC §4.3)
    return ForwardedBlock(
        depth=index,
        kind=f.kind,
        from_=from_,
        to=to,
        cc=cc,
        date=parse_loose_date(date_text, f.language) if date_text else None,
        date_text=date_text,
        subject=subject,
        body=_body(lines, f.body_start, stop, f.depth),
        client=f.client,
        language=f.language,
        line=lines[f.marker].src if f.marker < len(lines) else f.marker,
    )


def find_forwarded_blocks(text: str, subject: str | None = None) -> list[ForwardedBlock]:
    """Every forwarded/quoted header block in a plain-text body, outermost first.

    `subject` (the message's own subject) helps decide whether an Outlook
    "Original Message" block is a forward or a reply.
    """
    return split_own_text(text, subject)[1]


def find_forwarded_blocks_html(html: str, subject: str | None = None) -> list[ForwardedBlock]:
    """The HTML counterpart: blocks found in the readable text of an HTML body.

    ``<blockquote>`` levels become ``>`` quote levels and unescaped ``<addr>`` survive,
    so the same table and matcher serve HTML mail.
    """
    return find_forwarded_blocks(html_to_text(html), subject)


def strip_signature(text: str) -> str:
    """Cut a trailing signature (``-- ``, "Sent from my iPhone", …) from a message's words."""
    lines = text.split("\n")
    for idx in range(len(lines) - 1, max(-1, len(lines) - 26), -1):  # the last 25 lines
        s = lines[idx].strip()
        if s and _SIGNATURE.match(s):
            lines = lines[:idx]
            break
    return "\n".join(lines).rstrip()


def split_own_text(text: str, subject: str | None = None) -> tuple[str, list[ForwardedBlock]]:
    """(the author's own words, blocks): text above the first block, quotes and signature cut."""
    if not text:
        return "", []
    lines = _split_lines(text)
    found = _scan(lines, subject)
    blocks: list[ForwardedBlock] = []
    for idx, f in enumerate(found):
        stop = found[idx + 1].marker if idx + 1 < len(found) else len(lines)
        blocks.append(_to_block(lines, f, stop, idx + 1))
    top = found[0].marker if found else len(lines)
    own = [strip_signature("\n".join(ln.text for ln in lines[:top] if ln.depth == 0).strip())]
    # Text written below a quoted (">") forwarded block is the forwarder's too.
    if found and found[0].depth > 0:
        tail_start = None
        for k in range(found[0].body_start, len(lines)):
            if lines[k].text.strip() and lines[k].depth == 0:
                tail_start = k
                break
        end = found[1].marker if len(found) > 1 else len(lines)
        if tail_start is not None and tail_start < end:
            bottom = "\n".join(ln.text for ln in lines[tail_start:end] if ln.depth == 0)
            own.extend(["", strip_signature(bottom.strip())])
    own_text = "\n".join(own).strip()
    return own_text, blocks
