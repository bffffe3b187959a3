"""Notes as the pages show them: one shape for a contact's, a company's and a case's
timeline, newest first, a page at a time (a contact may have thousands of notes).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from crmdrop.dropbox.plan import ChainMessage, ChainPerson
from crmdrop.store.accounts import StoreError
from crmdrop.store.models import (
    Attachment,
    Case,
    Contact,
    Delivery,
    Note,
    Opportunity,
    Task,
    User,
    note_cases,
    note_contacts,
    note_opportunities,
)
from crmdrop.store.scope import owned

PAGE = 50

# Where quoted history starts in a body: a `>` line or an "On <date>, <who> wrote:" line.
_QUOTE_START = re.compile(r"^(>|On .{4,200} wrote:\s*$|-{2,} ?Original Message ?-{2,})", re.M)


@dataclass(frozen=True)
class Ref:
    """A linked object, enough to show and link it: `label` is what a user reads."""

    id: int
    label: str


@dataclass(frozen=True)
class AttachmentInfo:
    id: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class TimelineNote:
    """One filed email as a timeline shows it (SPEC §4.4)."""

    id: int
    subject: str
    date: datetime  # the email's own date, else when it was filed
    author_name: str
    author_email: str | None
    direction: str  # "from_user": sent by the user; "to_user": received
    is_forward: bool
    body: str  # what the author wrote
    quoted: str  # the quoted history below it, shown folded ("" when none)
    delivery_id: int
    dropbox: str  # which of the six dropboxes filed it
    filed_by: str  # the user whose dropbox it was
    attachments: list[AttachmentInfo] = field(default_factory=list)
    contacts: list[Ref] = field(default_factory=list)
    cases: list[Ref] = field(default_factory=list)
    opportunities: list[Ref] = field(default_factory=list)
    tasks: list[Ref] = field(default_factory=list)
    # The conversation the note keeps (a forwarded thread), newest first; a note
    # without one is a conversation of one message, the note itself.
    messages: tuple[ChainMessage, ...] = ()


@dataclass(frozen=True)
class Timeline:
    notes: list[TimelineNote]
    next_cursor: str | None  # pass back as `after` for the next (older) page


def fold_quoted(body: str) -> tuple[str, str]:
    """Split a body into what the author wrote and the quoted history under it."""
    m = _QUOTE_START.search(body)
    if m is None or not body[: m.start()].strip():
        return body, ""  # no quote, or a body that is *all* quote: hide nothing
    return body[: m.start()].rstrip(), body[m.start() :].strip()


def read_timeline(
    session: Session,
    query: Select[int],
    column: ColumnElement[int] | InstrumentedAttribute[int],
    after: str | None,
) -> Timeline:
    """A page of the notes `query` selects (by their id `column`), newest filed first.

    Ordered by note id — filing order — so that a contact with thousands of notes reads
    50 entries of an index, not every note it has, to sort them by date."""
    if after:
        if not after.isdigit():
            raise StoreError("that page link is not valid any more")
        query = query.where(column < int(after))
    ids = list(session.scalars(query.order_by(column.desc()).limit(PAGE + 1)).all())
    more = len(ids) > PAGE
    notes = load_notes(session, ids[:PAGE])
    cursor = str(notes[-1].id) if more and notes else None
    return Timeline(notes, cursor)


def _grouped(
    session: Session, query: Select[Any, Any, Any], prefix: str = ""
) -> dict[int, list[Ref]]:
    """(note id, object id, label) rows as each note's list of Refs."""
    out: dict[int, list[Ref]] = defaultdict(list)
    for note_id, ref_id, label in session.execute(query):
        out[note_id].append(Ref(ref_id, f"{prefix}{label}"))
    return out


def load_notes(session: Session, ids: Sequence[int]) -> list[TimelineNote]:
    """The notes with these ids, in this order, with everything a timeline shows."""
    if not ids:
        return []
    rows = session.execute(
        select(Note, Delivery.dropbox_kind, User.email)
        .join(Delivery, Delivery.id == Note.delivery_id)
        .join(User, User.id == Note.user_id)
        .where(Note.id.in_(ids))
    ).all()
    by_id = {note.id: (note, kind, email) for note, kind, email in rows}
    files: dict[int, list[AttachmentInfo]] = defaultdict(list)
    for a in session.execute(
        select(
            Attachment.id,
            Attachment.note_id,
            Attachment.filename,
            Attachment.content_type,
            Attachment.size,
        )
        .where(Attachment.note_id.in_(ids))
        .order_by(Attachment.id)
    ):
        files[a.note_id].append(AttachmentInfo(a.id, a.filename, a.content_type, a.size))
    contacts = _grouped(
        session,
        select(note_contacts.c.note_id, Contact.id, Contact.name)
        .join(Contact, Contact.id == note_contacts.c.contact_id)
        .where(note_contacts.c.note_id.in_(ids)),
    )
    cases = _grouped(
        session,
        select(note_cases.c.note_id, Case.id, Case.ref_no)
        .join(Case, Case.id == note_cases.c.case_id)
        .where(note_cases.c.note_id.in_(ids)),
        "CA",
    )
    opps = _grouped(
        session,
        select(note_opportunities.c.note_id, Opportunity.id, Opportunity.ref_no)
        .join(Opportunity, Opportunity.id == note_opportunities.c.opportunity_id)
        .where(note_opportunities.c.note_id.in_(ids)),
        "CO",
    )
    tasks = _grouped(
        session, select(Task.note_id, Task.id, Task.title).where(Task.note_id.in_(ids))
    )
    out = []
    for note_id in ids:
        if note_id not in by_id:
            continue
        note, kind, email = by_id[note_id]
        text, quoted = fold_quoted(note.body)
        out.append(
            TimelineNote(
                id=note.id,
                subject=note.subject,
                date=note.sent_at or note.created_at,
                author_name=note.author_name,
                author_email=note.author_email,
                direction=note.direction,
                is_forward=note.is_forward,
                body=text,
                quoted=quoted,
                delivery_id=note.delivery_id,
                dropbox=kind,
                filed_by=email,
                attachments=files.get(note_id, []),
                contacts=contacts.get(note_id, []),
                cases=cases.get(note_id, []),
                opportunities=opps.get(note_id, []),
                tasks=tasks.get(note_id, []),
                messages=conversation(note),
            )
        )
    return out


def conversation(note: Note) -> tuple[ChainMessage, ...]:
    """The messages a note keeps, newest first (SPEC §4.4: the whole chain)."""
    if note.chain:
        return tuple(ChainMessage.from_json(m) for m in note.chain)
    author = ChainPerson(note.author_name, note.author_email)
    return (ChainMessage(author, note.sent_at, (), (), note.subject, note.body, "note"),)


def get_note(session: Session, account_id: int, note_id: int) -> TimelineNote:
    """One note of the account, as a timeline shows it (another account's: NotFound)."""
    owned(session, Note, note_id, account_id, "note")
    return load_notes(session, [note_id])[0]
