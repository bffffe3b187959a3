"""What parsing yields: plain, typed facts about one message.

`mail/` is pure (bytes in, facts out). Nothing here knows about accounts,
dropboxes or storage; `dropbox/` consumes these types to decide a FilingPlan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from crmdrop.mail.payload import EncodedPayload


@dataclass(frozen=True)
class Mailbox:
    """A name and/or an address as a header or a forwarded block gives it.

    `address` is normalized (see `mail.addresses.normalize_address`) or None when
    the block named a person without an address (never invent one).
    """

    name: str
    address: str | None


@dataclass(frozen=True)
class FoundAddress:
    """One address seen in the message, and where it was seen.

    `where` is a short path such as ``header:from``, ``header:cc``,
    ``body:text``, ``body:html``, ``forwarded[1]:from``, ``forwarded[2]:cc``,
    ``attached[1]:header:to``, ``attached[1]:body:text``. The same address
    appears once per distinct `where`.
    """

    address: str
    name: str
    where: str


@dataclass(frozen=True)
class ForwardedBlock:
    """A forwarded or quoted message found inline, outermost first.

    `kind` is ``forward`` (a forwarded header block) or ``reply`` (an
    "On ... wrote:" / Outlook reply header). `client` and `language` name the
    table row that matched (for explain and docs), e.g. ``gmail``/``en``.
    `line` is the 0-based index of the block's first line (separator, header or wrote
    line) in the text it was found in.
    """

    depth: int
    kind: str
    from_: Mailbox | None
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    date: datetime | None
    date_text: str | None
    subject: str | None
    body: str
    client: str
    language: str
    line: int = 0


@dataclass(frozen=True)
class Attachment:
    """A file of the message. A large base64 one keeps `data` empty and its `source`
    left encoded in the raw message: read it with `chunks()` (or `content()`)."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    source: EncodedPayload | None = None

    @property
    def size(self) -> int:
        return self.source.size if self.source is not None else len(self.data)

    def chunks(self) -> Iterator[bytes]:
        """The decoded bytes a piece at a time (all at once when they are in `data`)."""
        if self.source is None:
            yield self.data
        else:
            yield from self.source.chunks()

    def content(self) -> bytes:
        """All the bytes at once: for small files, or where a caller needs them whole."""
        return self.data if self.source is None else b"".join(self.source.chunks())


@dataclass
class ParsedMessage:
    """Everything the rest of crmdrop needs from one message.

    `text` is the readable body (HTML turned into text when there is no plain
    part); `own_text` is what the sender wrote above any forwarded/quoted
    block, with quoted history and signature trimmed; `forwarded` lists inline
    forwarded blocks outermost first; `attached` holds message/rfc822 parts,
    parsed recursively. `addresses` lists every address found anywhere, each
    with where it was found. `defects` records MIME problems (never raised); `failure`
    that the parser itself failed.
    """

    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    subject: str
    date: datetime | None
    from_: list[Mailbox]
    sender: list[Mailbox]
    reply_to: list[Mailbox]
    to: list[Mailbox]
    cc: list[Mailbox]
    headers: dict[str, list[str]]
    text: str
    html: str | None
    own_text: str
    forwarded: list[ForwardedBlock]
    attachments: list[Attachment]
    attached: list[ParsedMessage]
    addresses: list[FoundAddress]
    defects: list[str] = field(default_factory=list)
    content_hash: str = ""
    # Set when our own code failed (never the message's fault): the rest is empty then,
    # and the worker must retry and park the delivery, never judge it on this.
    failure: str | None = None

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive name), or None."""
        values = self.headers.get(name.lower())
        return values[0] if values else None
