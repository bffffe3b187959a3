"""Cases and opportunities as a user works with them: lists with status filters, a page
per record, and edits of title and status (SPEC §5.1). Addressed by reference number
(`CA12` is number 12), scoped by account: another account's number is `NotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmdrop.store.accounts import StoreError
from crmdrop.store.models import Case, Contact, Opportunity
from crmdrop.store.records import CASES, OPPORTUNITIES, RecordKind
from crmdrop.store.scope import NotFound
from crmdrop.store.timeline import Ref, Timeline, read_timeline

__all__ = [
    "CASES",
    "OPPORTUNITIES",
    "CaseStatus",
    "OpportunityStatus",
    "RecordDetail",
    "RecordRow",
    "edit_record",
    "get_record",
    "list_records_by_status",
    "statuses",
]


class CaseStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class OpportunityStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


def statuses(kind: RecordKind) -> list[str]:
    """The statuses a case (or an opportunity) may have, in the order pages offer them."""
    return [s.value for s in (CaseStatus if kind is CASES else OpportunityStatus)]


def _status(kind: RecordKind, value: str) -> str:
    if value not in statuses(kind):
        allowed = ", ".join(statuses(kind))
        raise StoreError(f"{value!r} is not a {kind.name} status (one of: {allowed})")
    return value


@dataclass(frozen=True)
class RecordRow:
    """A case or opportunity in a list."""

    id: int
    number: int
    ref: str  # "CA12": what a user types into an email to file under it
    title: str
    status: str
    notes: int
    created_at: datetime


@dataclass(frozen=True)
class RecordDetail:
    id: int
    number: int
    ref: str
    title: str
    status: str
    statuses: list[str]  # the statuses it may be given
    contacts: list[Ref]
    timeline: Timeline


def list_records_by_status(
    session: Session, account_id: int, kind: RecordKind, status: str | None = None
) -> list[RecordRow]:
    """The account's cases (or opportunities), newest first, optionally of one status."""
    model = kind.model
    column = kind.notes.c[kind.column]
    counts = select(column.label("rid"), func.count().label("n")).group_by(column).subquery()
    query = (
        select(model, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.rid == model.id)
        .where(model.account_id == account_id)
        .order_by(model.ref_no.desc())
    )
    if status:
        query = query.where(model.status == _status(kind, status))
    rows = cast("list[tuple[Case | Opportunity, int]]", session.execute(query).all())
    return [
        RecordRow(
            r.id, r.ref_no, f"{kind.prefix}{r.ref_no}", r.title, r.status, int(n), r.created_at
        )
        for r, n in rows
    ]


def _find(session: Session, account_id: int, kind: RecordKind, number: int) -> Case | Opportunity:
    model = kind.model
    record = cast(
        "Case | Opportunity | None",
        session.scalar(select(model).where(model.account_id == account_id, model.ref_no == number)),
    )
    if record is None:
        raise NotFound(f"no {kind.name} {kind.prefix}{number}")
    return record


def get_record(
    session: Session, account_id: int, kind: RecordKind, number: int, *, after: str | None = None
) -> RecordDetail:
    """One case (or opportunity) by number, with its contacts and a page of its notes."""
    record = _find(session, account_id, kind, number)
    contacts = [
        Ref(i, name)
        for i, name in session.execute(
            select(Contact.id, Contact.name)
            .join(kind.contacts, kind.contacts.c.contact_id == Contact.id)
            .where(kind.contacts.c[kind.column] == record.id)
            .order_by(Contact.name)
        )
    ]
    query = select(kind.notes.c.note_id).where(kind.notes.c[kind.column] == record.id)
    return RecordDetail(
        id=record.id,
        number=record.ref_no,
        ref=f"{kind.prefix}{record.ref_no}",
        title=record.title,
        status=record.status,
        statuses=statuses(kind),
        contacts=contacts,
        timeline=read_timeline(session, query, kind.notes.c.note_id, after),
    )


def edit_record(
    session: Session, account_id: int, kind: RecordKind, number: int, *, title: str, status: str
) -> RecordRow:
    """Give a case (or opportunity) a new title and status; bad input changes nothing."""
    record = _find(session, account_id, kind, number)
    clean = " ".join(title.split())
    if not clean:
        raise StoreError(f"a {kind.name} needs a title")
    record.status = _status(kind, status)
    record.title = clean
    session.flush()
    notes = session.scalar(
        select(func.count()).select_from(kind.notes).where(kind.notes.c[kind.column] == record.id)
    )
    return RecordRow(
        record.id,
        record.ref_no,
        f"{kind.prefix}{record.ref_no}",
        record.title,
        record.status,
        int(notes or 0),
        record.created_at,
    )
