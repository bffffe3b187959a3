"""One JSON shape per record kind: what `crmdrop export`, the CLI, the pages and the API
print. Field names and order are a contract (docs/export.md, docs/records.md).

Each function takes the row and what the caller already looked up in bulk (addresses,
links, user emails), so a list of a thousand notes is still a handful of queries. The
short form of a note, case or task (`links`/`detail` left out) is what a list shows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeAlias

from crmdrop.dropbox.address import dropbox_addresses, redact
from crmdrop.dropbox.plan import NoteDraft
from crmdrop.store.models import (
    Case,
    Company,
    Contact,
    Delivery,
    Note,
    Opportunity,
    Outbox,
    Task,
    User,
)

__all__ = [
    "NoteLinks",
    "RecordDetail",
    "case_json",
    "company_json",
    "contact_json",
    "delivery_json",
    "note_json",
    "opportunity_json",
    "plan_with_note_texts",
    "record_json",
    "recorded_plan",
    "reply_json",
    "task_json",
    "user_json",
]


# A record's contacts: their addresses (export, lists), or name/email pairs (show).
RecordContacts: TypeAlias = list[str] | list[dict[str, str | None]]


@dataclass(frozen=True)
class NoteLinks:
    """What a note is filed under, by the names export shows (emails, names, refs)."""

    contacts: list[str]
    companies: list[str]
    cases: list[str]
    opportunities: list[str]
    attachments: list[str]


def note_json(
    note: Note, *, filed_by: str | None, links: NoteLinks | None = None
) -> dict[str, Any]:
    """A note; with `links`, the whole note as export shows it (body, links, attachments)."""
    row: dict[str, Any] = {
        "id": note.id,
        "subject": note.subject,
        "date": note.sent_at.isoformat() if note.sent_at else None,
        "author": note.author_name,
        "author_email": note.author_email,
    }
    if links is None:
        row["filed_by"] = filed_by
        return row
    row.update(
        direction=note.direction,
        is_forward=note.is_forward,
        filed_by=filed_by,
        delivery_id=note.delivery_id,
        message_id=note.message_id,
        contacts=links.contacts,
        companies=links.companies,
        cases=links.cases,
        opportunities=links.opportunities,
        attachments=links.attachments,
        body=note.body,
        own_text=note.own_text,
        chain=note.chain or [],
    )
    return row


def contact_json(contact: Contact, *, emails: list[str], company: str | None) -> dict[str, Any]:
    return {"id": contact.id, "name": contact.name, "emails": emails, "company": company}


def company_json(
    company: Company, *, emails: list[str], contacts: list[str] | None = None
) -> dict[str, Any]:
    """A company; `contacts` (its members' addresses) where a listing shows them."""
    row: dict[str, Any] = {
        "id": company.id,
        "name": company.name,
        "domain": company.domain,
        "emails": emails,
    }
    if contacts is not None:
        row["contacts"] = contacts
    return row


@dataclass(frozen=True)
class RecordDetail:
    """What `cases|opportunities list|show` add to export's short form of a record."""

    owner: str | None
    notes: int | list[dict[str, Any]]  # a count (list), or the notes (show: `note_json`)


def record_json(
    record: Case | Opportunity,
    prefix: str,
    *,
    contacts: RecordContacts,
    detail: RecordDetail | None = None,
) -> dict[str, Any]:
    """A case or opportunity by its reference (`CA12`, `CO3`); `contacts` are addresses
    (export, list) or name/email pairs (show)."""
    row: dict[str, Any] = {
        "ref": f"{prefix}{record.ref_no}",
        "title": record.title,
        "status": record.status,
    }
    if detail is None:
        row["contacts"] = contacts
        return row
    row.update(
        owner=detail.owner,
        created_at=record.created_at.isoformat(),
        contacts=contacts,
        notes=detail.notes,
    )
    return row


def case_json(
    case: Case, *, contacts: RecordContacts, detail: RecordDetail | None = None
) -> dict[str, Any]:
    return record_json(case, "CA", contacts=contacts, detail=detail)


def opportunity_json(
    opportunity: Opportunity, *, contacts: RecordContacts, detail: RecordDetail | None = None
) -> dict[str, Any]:
    return record_json(opportunity, "CO", contacts=contacts, detail=detail)


def task_json(
    task: Task, *, owner: str | None, contacts: list[str], with_done: bool = False
) -> dict[str, Any]:
    """A task; `with_done` adds whether it is done (`tasks list`; export leaves it out)."""
    row: dict[str, Any] = {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "due": task.due_date.isoformat() if task.due_date else None,
        "due_kind": task.due_kind,
        "timezone": task.timezone,
        "owner": owner,
    }
    if with_done:
        row["done"] = task.done
    row["contacts"] = contacts
    return row


# The texts of a note's draft (`NoteDraft`) that the note itself keeps: the processing
# record of the delivery that filed the note leaves them out (`recorded_plan`) and they
# are read back from the note (`plan_with_note_texts`). A 5 KB message made 6.5 KB of
# plan JSON, its body twice in each filing's rows (docs/performance.md, session 6).
NOTE_TEXTS = ("body", "own_text", "chain")
_DRAFT_FIELDS = tuple(f.name for f in fields(NoteDraft))


def recorded_plan(plan: dict[str, Any], *, filed_note: bool) -> dict[str, Any]:
    """The plan JSON as `deliveries.plan` keeps it: without the note's texts when this
    delivery filed the note (`filed_note`), which keeps them."""
    note = plan.get("note")
    if not filed_note or not note:
        return plan
    return {**plan, "note": {k: v for k, v in note.items() if k not in NOTE_TEXTS}}


def plan_with_note_texts(plan: dict[str, Any] | None, note: Note | None) -> dict[str, Any] | None:
    """A stored plan whole again: the note's texts put back in the draft, in its field
    order, when the record left them to the note (`recorded_plan`). `None` for each
    text of a note that is gone (kept records and older ones are returned as they are)."""
    draft = plan.get("note") if plan else None
    if plan is None or not draft or "body" in draft:
        return plan
    texts: dict[str, Any] = {
        "body": note.body if note else None,
        "own_text": note.own_text if note else None,
        "chain": (note.chain or []) if note else None,
    }
    whole = {k: draft[k] if k in draft else texts.get(k) for k in _DRAFT_FIELDS}
    whole.update((k, v) for k, v in draft.items() if k not in whole)
    return {**plan, "note": whole}


def delivery_json(d: Delivery, *, full: bool = False, note: Note | None = None) -> dict[str, Any]:
    """A processing record; `full` adds the size and the whole decision (`plan`, with the
    texts of `note`, the note it filed, put back: `plan_with_note_texts`)."""
    row: dict[str, Any] = {
        "id": d.id,
        "message_id": d.message_id,
        "dropbox": d.dropbox_kind,
        "status": d.status,
        "reason": d.reason,
        "subject": d.subject,
        "author": d.author,
        "sender_auth": d.sender_auth or None,
        "envelope_from": d.mail_from,
        "rcpt_to": redact(d.rcpt_to),
        "protocol": d.protocol,
        "received_at": d.received_at.isoformat(),
        "finished_at": d.finished_at.isoformat() if d.finished_at else None,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "note_id": d.note_id,
    }
    if full:
        row["size"] = d.size
        row["plan"] = plan_with_note_texts(d.plan, note)
    return row


def reply_json(r: Outbox) -> dict[str, Any]:
    """An error reply in the outbox."""
    return {"to": r.mail_to, "kind": r.kind, "status": r.status, "delivery_id": r.delivery_id}


def user_json(user: User, *, account: str, domain: str) -> dict[str, Any]:
    """A user and their six dropbox addresses (`users add|show`, `dropbox regenerate`)."""
    return {
        "email": user.email,
        "account": account,
        "dropbox": {k.value: v for k, v in dropbox_addresses(user.token, domain).items()},
    }
