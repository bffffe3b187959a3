"""A contact's timeline: the notes filed under them, each with the conversation it keeps.

One store function for every door (the web page of issue #8, the API, the CLI): a note
that carries a forwarded thread shows it as messages (author, date, recipients, own
words), newest first; a note without one is a conversation of one message, the note.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop.dropbox.plan import ChainMessage, ChainPerson
from crmdrop.store.models import Contact, Note, note_contacts

__all__ = ["TimelineEntry", "contact_timeline"]


@dataclass(frozen=True)
class TimelineEntry:
    """One note on a contact's timeline."""

    note_id: int
    subject: str
    date: datetime | None
    author: ChainPerson
    direction: str  # "from_user" | "to_user"
    is_forward: bool
    messages: tuple[ChainMessage, ...]  # the conversation, newest first


def _messages(note: Note) -> tuple[ChainMessage, ...]:
    if note.chain:
        return tuple(ChainMessage.from_json(m) for m in note.chain)
    author = ChainPerson(note.author_name, note.author_email)
    return (ChainMessage(author, note.sent_at, (), (), note.subject, note.body, "note"),)


def contact_timeline(session: Session, account_id: int, contact_id: int) -> list[TimelineEntry]:
    """The contact's notes, newest first, each with its conversation (empty for a contact
    of another account: nothing crosses accounts, SPEC §1.1)."""
    contact = session.get(Contact, contact_id)
    if contact is None or contact.account_id != account_id:
        return []
    notes = session.scalars(
        select(Note)
        .join(note_contacts, note_contacts.c.note_id == Note.id)
        .where(note_contacts.c.contact_id == contact_id, Note.account_id == account_id)
        .order_by(Note.sent_at.desc(), Note.id.desc())
    ).all()
    return [
        TimelineEntry(
            note_id=n.id,
            subject=n.subject,
            date=n.sent_at,
            author=ChainPerson(n.author_name, n.author_email),
            direction=n.direction,
            is_forward=n.is_forward,
            messages=_messages(n),
        )
        for n in notes
    ]
