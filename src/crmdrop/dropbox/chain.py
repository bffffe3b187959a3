"""The conversation a forward carries: every message of it, newest first (issue #10).

A forward of a thread (reply history, forwards of forwards) is more than its newest
message: each inline block is a message with its own author, date, recipients and words.
The note keeps them all, so export, `explain` and the contact timeline can show the
thread as a conversation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmdrop.dropbox.address import redact, redact_text
from crmdrop.dropbox.names import contact_name
from crmdrop.dropbox.plan import ChainMessage, ChainPerson
from crmdrop.mail.addresses import normalize_address
from crmdrop.mail.model import ForwardedBlock, Mailbox, ParsedMessage

__all__ = ["ChainMessage", "ChainPerson", "chain_of", "in_zone"]


def in_zone(moment: datetime | None, timezone: str) -> datetime | None:
    """A block's date line names no zone: it is the forwarder's local time, the dropbox
    owner's (an unknown zone name: UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    try:
        return moment.replace(tzinfo=ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return moment.replace(tzinfo=UTC)


def _person(mb: Mailbox) -> ChainPerson:
    """A name and address as the note shows them; a dropbox address loses its token."""
    if mb.address:
        email = normalize_address(mb.address)
        return ChainPerson(redact_text(contact_name(mb.name, email)), redact(email))
    return ChainPerson(redact_text(mb.name.strip()), None)


def _message(block: ForwardedBlock, timezone: str) -> ChainMessage:
    return ChainMessage(
        author=_person(block.from_) if block.from_ is not None else None,
        date=in_zone(block.date, timezone),
        to=tuple(_person(m) for m in block.to),
        cc=tuple(_person(m) for m in block.cc),
        subject=block.subject,
        text=redact_text(block.body.strip()),
        kind=block.kind,
    )


def chain_of(parsed: ParsedMessage, timezone: str) -> tuple[ChainMessage, ...]:
    """Every forwarded or quoted message that names its author, outermost (newest) first.

    A bare separator line names nobody and carries nothing of its own: it is no message.
    """
    return tuple(_message(b, timezone) for b in parsed.forwarded if b.from_ is not None)
