"""A fast, headers-only read of a message, for decisions at SMTP time (before the 250).

Only the header section is scanned (up to the first empty line); the body is never
touched, so the cost does not grow with the message size.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crmdrop.mail.addresses import parse_address_list
from crmdrop.mail.encoding import decode_header_str
from crmdrop.mail.model import Mailbox

__all__ = [
    "ADDRESS_HEADERS",
    "DecodedHeaders",
    "HeaderSummary",
    "clean_message_id",
    "find_blank_line",
    "parse_id_list",
    "read_header_summary",
    "split_header_section",
]

ADDRESS_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-bcc",
)

_ID = re.compile(r"<([^<>]*)>")


def find_blank_line(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(start, end) of the first empty line at or after `start`: what the pattern
    `\\r?\\n\\r?\\n` would match, found with two `find`s (a regular expression
    tries every position of the header section: several times slower, once per
    accepted message, twice). The bare-LF search stops where the CRLF one matched: a
    CRLF message's body is not scanned for a `\n\n` that could only come later."""
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf + 1 if crlf >= 0 else len(data))
    if lf < 0 and crlf < 0:
        return None
    if crlf < 0 or 0 <= lf < crlf:
        first, end = lf, lf + 2
    else:
        first, end = crlf, crlf + 3
    if first > start and data[first - 1] == 0x0D:  # the \r of a CRLF line end
        first -= 1
    return first, end


def split_header_section(raw: bytes) -> bytes:
    """The header section of `raw` (without the blank line); all of it if there is none.

    A message that starts with a line break has no headers at all (as `parse_message`
    reads it): at SMTP time it must not seem to have a From that the worker won't see.
    """
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    found = find_blank_line(raw)
    if found is None:
        return raw
    return raw[: found[0]]


def read_raw_headers(section: bytes) -> dict[str, list[str]]:
    """Unfolded raw header values by lowercased name (8-bit kept surrogate-escaped).

    Each physical line is stripped once and the lines of a field joined by one space;
    this runs once per accepted message on the event loop, so it stays a plain loop.
    """
    text = section.decode("ascii", errors="surrogateescape")
    headers: dict[str, list[str]] = {}
    name: str | None = None
    value_parts: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        if line[0] in " \t":
            if name is not None:
                value_parts.append(line.strip())
            continue
        colon = line.find(":")
        if colon <= 0 or " " in line[:colon].strip() or line.startswith("From "):
            continue  # mbox "From " line or junk: skip
        if name is not None:
            _add_field(headers, name, value_parts)
        name = line[:colon].strip().lower()
        value_parts = [line[colon + 1 :].strip()]
    if name is not None:
        _add_field(headers, name, value_parts)
    return headers


def _add_field(headers: dict[str, list[str]], name: str, parts: list[str]) -> None:
    value = parts[0] if len(parts) == 1 else " ".join(parts).strip()
    values = headers.get(name)
    if values is None:
        headers[name] = [value]
    else:
        values.append(value)


class DecodedHeaders(Mapping[str, list[str]]):
    """Decoded header values by lowercased name, each name decoded when first asked for.

    The SMTP-time checks read a handful of headers of a message that may carry dozens
    (every relay's `Received`, DKIM signatures...): decoding them all was most of the
    header read's cost at end of DATA, paid for every accepted message.
    """

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: dict[str, list[str]]) -> None:
        self._raw = raw
        self._decoded: dict[str, list[str]] = {}

    def __getitem__(self, name: str) -> list[str]:
        values = self._decoded.get(name)
        if values is None:
            values = [decode_header_str(v) for v in self._raw[name]]  # KeyError: absent
            self._decoded[name] = values
        return values

    def get(self, name: str, default: Any = None) -> Any:
        """As `Mapping.get`, without the KeyError an absent header would raise inside."""
        return self[name] if name in self._raw else default

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"DecodedHeaders({dict(self)!r})"


def clean_message_id(value: str | None) -> str | None:
    """A Message-ID without angle brackets; None for empty values such as ``<>``."""
    if value is None:
        return None
    m = _ID.search(value)
    v = m.group(1) if m else value
    v = v.strip().strip("<>").strip()
    if not v or " " in v:
        return v.split()[0] if v.split() else None
    return v


# What one In-Reply-To / References header may contribute: its first id (the thread's
# root) and the newest ones (RFC 5322 §3.6.4 lists them oldest first). A header of
# 100,000 ids is an attack, not a thread, and every id costs a lookup.
MAX_IDS = 100


def parse_id_list(value: str | None, limit: int = MAX_IDS) -> list[str]:
    """Message-IDs from an In-Reply-To / References value, without angle brackets.

    Duplicates are dropped (first one kept) and at most `limit` ids are returned.
    """
    if not value:
        return []
    ids = [i.strip() for i in _ID.findall(value) if i.strip()]
    if not ids:
        ids = [t.strip("<>") for t in value.split() if "@" in t]
    unique = list(dict.fromkeys(ids))
    if len(unique) > limit:
        unique = [unique[0], *unique[len(unique) - limit + 1 :]]
    return unique


@dataclass(frozen=True)
class HeaderSummary:
    """What the SMTP-time checks need: authors, recipients, ids and loop/bulk markers."""

    from_: list[Mailbox]
    to: list[Mailbox]
    cc: list[Mailbox]
    reply_to: list[Mailbox]
    message_id: str | None
    auto_submitted: str | None
    precedence: str | None
    list_id: str | None
    subject: str
    sender: list[Mailbox] = field(default_factory=list)
    headers: Mapping[str, list[str]] = field(default_factory=dict)  # decoded on demand

    def has_header(self, name: str) -> bool:
        return name.lower() in self.headers

    def header(self, name: str) -> str | None:
        """First decoded value of a header (case-insensitive), or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


def addresses_of(headers: dict[str, list[str]], name: str) -> list[Mailbox]:
    """Mailboxes of every occurrence of an address header (names decoded per item)."""
    out: list[Mailbox] = []
    for v in headers.get(name, ()):
        out.extend(parse_address_list(decode_header_str(v, rfc2047=False)))
    return out


def read_header_summary(raw: bytes) -> HeaderSummary:
    """Read only the header section of `raw`.

    Bad input never makes it raise (the decoders are total); should it raise all the
    same, that is a bug of ours, and the caller must answer 451 — never read it as a
    message without headers, whose sender check would refuse it for good.
    """
    raw_headers = read_raw_headers(split_header_section(raw))
    decoded = DecodedHeaders(raw_headers)

    def first(name: str) -> str | None:
        vs = decoded.get(name)
        return vs[0] if vs else None

    return HeaderSummary(
        from_=addresses_of(raw_headers, "from"),
        to=addresses_of(raw_headers, "to"),
        cc=addresses_of(raw_headers, "cc"),
        reply_to=addresses_of(raw_headers, "reply-to"),
        sender=addresses_of(raw_headers, "sender"),
        message_id=clean_message_id(first("message-id")),
        auto_submitted=first("auto-submitted"),
        precedence=first("precedence"),
        list_id=first("list-id"),
        subject=first("subject") or "",
        headers=decoded,
    )
