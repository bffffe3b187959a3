"""Text decoding that never fails: charsets, RFC 2047 encoded-words, raw 8-bit headers.

Real mail lies about charsets, uses unknown ones and puts raw UTF-8 in headers; every
function here returns the best readable string and never raises.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from functools import lru_cache

__all__ = ["decode_bytes", "decode_header_str", "decode_rfc2047", "lookup_charset"]

_ALIASES = {
    "unknown-8bit": "latin-1",
    "x-unknown": "latin-1",
    "unknown": "latin-1",
    "ansi_x3.4-1968": "ascii",
    "us-ascii": "ascii",
    "x-user-defined": "latin-1",
    "iso-8859-8-i": "iso-8859-8",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp-850": "cp850",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "iso-2022-jp-ms": "cp932",
    "shift-jis": "cp932",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "utf8": "utf-8",
    "utf-7": "utf-7",
    "latin1": "latin-1",
    "iso-8859-1": "cp1252",  # mislabelled cp1252 is the common case
    "default": "latin-1",
}


# Python codecs that are no mail charset: they fail on any byte (undefined), decode
# something else than bytes of text (idna, punycode, escapes), or turn bytes into bytes
# (base64, hex, zlib, rot13 — these are refused by `_is_text_encoding` below).
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape", "mbcs", "oem"}
)


@lru_cache(maxsize=256)
def lookup_charset(name: str | None) -> str | None:
    """A Python codec name for a MIME charset label, or None if unknown or no text charset."""
    if not name:
        return None
    label = name.strip().strip("\"'").lower()
    label = label.split("*", 1)[0]  # RFC 2231 language suffix
    label = _ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None = None) -> tuple[str, str | None]:
    """Decode body bytes; returns (text, defect or None). Falls back to UTF-8 then cp1252."""
    codec = lookup_charset(charset)
    defect: str | None = None
    if charset and codec is None:
        defect = f"unknown charset {charset!r}"
    if codec is not None:
        try:
            return data.decode(codec), None
        except (LookupError, ValueError):  # UnicodeError is a ValueError
            defect = f"bytes not valid in charset {charset!r}"
    try:
        return data.decode("utf-8"), defect
    except UnicodeDecodeError:
        pass
    if codec is not None:
        try:
            return data.decode(codec, errors="replace"), defect
        except (LookupError, ValueError):
            pass
    return data.decode("cp1252", errors="replace"), defect


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?]*)\?=")
_BETWEEN = re.compile(r"(\?=)[ \t\r\n]+(=\?)")
# A raw 8-bit header byte as ``email`` hands it over (surrogate-escaped).
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _decode_word(charset: str, enc: str, payload: str) -> str:
    try:
        if enc in "Bb":
            pad = (-len(payload)) % 4
            raw = base64.b64decode(payload + "=" * pad, validate=False)
        else:
            raw = re.sub(
                rb"=([0-9A-Fa-f]{2})",
                lambda m: bytes([int(m.group(1), 16)]),
                payload.replace("_", " ").encode("latin-1", errors="replace"),
            )
    except (binascii.Error, ValueError):
        return payload
    text, _ = decode_bytes(raw, charset)
    return text


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded-words anywhere in `value` (also inside quotes, as clients do).

    Whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2). Adjacent
    words in the same charset are joined before decoding so multi-byte characters
    split across words survive.
    """
    if "=?" not in value:
        return value
    value = _BETWEEN.sub(r"\1\2", value)
    out: list[str] = []
    pos = 0
    pending: list[tuple[str, str, str]] = []

    def flush() -> None:
        if not pending:
            return
        cs, enc = pending[0][0], pending[0][1]
        if enc in "Bb":
            raw = b""
            for _, _, p in pending:
                try:
                    raw += base64.b64decode(p + "=" * ((-len(p)) % 4), validate=False)
                except (binascii.Error, ValueError):
                    raw += p.encode("latin-1", errors="replace")
            out.append(decode_bytes(raw, cs)[0])
        else:
            out.append(_decode_word(cs, enc, "".join(p for _, _, p in pending)))
        pending.clear()

    for m in _ENCODED_WORD.finditer(value):
        if m.start() != pos:
            flush()
            out.append(value[pos : m.start()])
        cs = m.group(1).split("*", 1)[0]
        enc = m.group(2)
        if pending and (
            pending[0][0].lower() != cs.lower() or pending[0][1].upper() != enc.upper()
        ):
            flush()
        pending.append((cs, enc, m.group(3)))
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_header_str(value: str, *, rfc2047: bool = True) -> str:
    """Turn a header value as read by ``email`` (compat32, surrogate-escaped 8-bit) into text.

    Raw 8-bit header bytes are read as UTF-8, else cp1252; then encoded-words are
    decoded (unless `rfc2047` is False: address lists are split first, then each name
    decoded, so an encoded comma cannot split a name); folding whitespace is collapsed.
    """
    if not value.isascii() and _ESCAPED_BYTE.search(value):
        raw = value.encode("ascii", errors="surrogateescape")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            lenient = raw.decode("utf-8", errors="replace")
            # Mostly-UTF-8 (e.g. a name cut mid-character) stays UTF-8.
            value = (
                lenient if lenient.count("\ufffd") <= 2 else raw.decode("cp1252", errors="replace")
            )
    if rfc2047:
        value = decode_rfc2047(value)
    if "\n" in value or "\r" in value:
        value = re.sub(r"\r?\n[ \t]*", " ", value)
    return value.replace("\r", "").strip()
