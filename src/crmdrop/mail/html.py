"""HTML bodies: readable text (inscriptis) and cheap ``mailto:`` harvesting.

Converting HTML costs far more than anything else in a parse, so callers convert only
when a message has no plain-text alternative; `mailto_addresses` is a regex scan
that is safe to run on every HTML part.
"""

from __future__ import annotations

import html as html_lib
import re
from urllib.parse import unquote

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

__all__ = ["html_to_text", "mailto_addresses"]

_CONFIG = ParserConfig(css=CSS_PROFILES["strict"])
_MAILTO_HREF = re.compile(
    r"""(?is)<a\b[^>]*?href\s*=\s*["']?\s*mailto:([^"'?>\s]+)[^>]*>(.*?)</a\s*>"""
)
_TAG = re.compile(r"<[^>]*>")
_BLOCKQUOTE_OPEN = re.compile(r"(?i)<blockquote\b[^>]*>")
_BLOCKQUOTE_CLOSE = re.compile(r"(?i)</blockquote\s*>")
_QUOTE_MARK_OPEN = "\ue000"
_QUOTE_MARK_CLOSE = "\ue001"
_STYLE_SCRIPT = re.compile(r"(?is)<(style|script|head)\b.*?</\1\s*>")
_MSO_COMMENTS = re.compile(r"(?s)<!--.*?-->")
# "<jane@example.com>" written into HTML unescaped (iOS Mail, Yahoo): not a tag.
_RAW_ANGLE_ADDRESS = re.compile(r"<([\w.+'%-]+@[\w-]+(?:\.[\w-]+)+)>")


def html_to_text(html: str) -> str:
    """Readable text from HTML; quoted ``<blockquote>`` levels become ``> `` prefixes.

    Keeping the quote depth lets the plain-text forwarded-block matcher tell a quoted
    history from the author's words in HTML-only mail too.
    """
    if not html or not html.strip():
        return ""
    src = _MSO_COMMENTS.sub("", html)
    src = _STYLE_SCRIPT.sub("", src)
    src = _RAW_ANGLE_ADDRESS.sub(r"&lt;\1&gt;", src)
    has_quotes = "<blockquote" in src.lower()
    if has_quotes:
        src = _BLOCKQUOTE_OPEN.sub("<div>" + _QUOTE_MARK_OPEN + "</div><div>", src)
        src = _BLOCKQUOTE_CLOSE.sub("</div><div>" + _QUOTE_MARK_CLOSE + "</div>", src)
    try:
        text = get_text(src, _CONFIG)
    except Exception:  # inscriptis/lxml on hostile markup: fall back to tag stripping
        text = html_lib.unescape(_TAG.sub(" ", src))
    text = text.replace("\u00a0", " ")
    if has_quotes:
        text = _apply_quote_marks(text)
    lines = [ln.rstrip() for ln in text.split("\n")]
    # collapse runs of blank lines
    out: list[str] = []
    blank = 0
    for ln in lines:
        if ln.strip():
            blank = 0
            out.append(ln.strip())
        else:
            blank += 1
            if blank <= 1:
                out.append("")
    return "\n".join(out).strip()


def _apply_quote_marks(text: str) -> str:
    depth = 0
    out: list[str] = []
    for ln in text.split("\n"):
        opens = ln.count(_QUOTE_MARK_OPEN)
        closes = ln.count(_QUOTE_MARK_CLOSE)
        content = ln.replace(_QUOTE_MARK_OPEN, "").replace(_QUOTE_MARK_CLOSE, "").strip()
        if opens or closes:
            depth = max(0, depth + opens - closes)
            if not content:
                continue
        out.append(("> " * depth + content) if depth and content else content)
    return "\n".join(out)


def mailto_addresses(html: str) -> list[tuple[str, str]]:
    """(address, link text) for every ``<a href="mailto:…">`` in the HTML."""
    if "mailto:" not in html.lower():
        return []
    out: list[tuple[str, str]] = []
    for m in _MAILTO_HREF.finditer(html):
        addr = html_lib.unescape(unquote(m.group(1))).strip()
        label = html_lib.unescape(_TAG.sub("", m.group(2))).strip()
        out.append((addr, label))
    return out
