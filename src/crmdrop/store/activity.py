"""The activity of a user's dropboxes and what a user can do about one delivery.

Every decision crmdrop takes is visible here (the processing record, SPEC §4.6, §6.3)
and every wrong one can be put right: never make a contact of an address again, undo a
filing, retry. Each such action is recorded on the delivery (`delivery_actions`).
Scoped by account: another account's delivery, note or attachment is `NotFound`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crmdrop.dropbox.address import redact
from crmdrop.store import inbound
from crmdrop.store.accounts import StoreError, add_exclusion
from crmdrop.store.contacts import LINKS, remove_contact_rows
from crmdrop.store.models import (
    Account,
    Attachment,
    Case,
    Contact,
    ContactEmail,
    Delivery,
    DeliveryAction,
    Note,
    Opportunity,
    RawMessage,
    Task,
    User,
    note_cases,
    note_companies,
    note_contacts,
    note_opportunities,
    task_contacts,
)
from crmdrop.store.records import CASES, OPPORTUNITIES
from crmdrop.store.scope import NotFound, owned
from crmdrop.store.serialize import plan_with_note_texts
from crmdrop.store.timeline import Ref

ACTIVITY_PAGE = 50


class DeliveryStatus(StrEnum):
    """Where a delivery stands (the activity page's status column and filter)."""

    QUEUED = "queued"
    FILED = "filed"
    DUPLICATE = "duplicate"
    TASK_ONLY = "task_only"
    NO_CONTACT = "no_contact"
    REJECTED = "rejected"
    FAILED = "failed"
    UNDONE = "undone"  # its filing was undone from its page; Retry files it again


class ActionKind(StrEnum):
    UNDO = "undo"
    NEVER_CONTACT = "never_contact"
    DELETE_CONTACT = "delete_contact"
    RETRY = "retry"


UNDOABLE = {DeliveryStatus.FILED, DeliveryStatus.TASK_ONLY}
RETRYABLE = {DeliveryStatus.FAILED, DeliveryStatus.UNDONE, DeliveryStatus.NO_CONTACT}


@dataclass(frozen=True)
class ActivityRow:
    id: int
    received_at: datetime
    dropbox: str
    subject: str
    author: str
    status: str
    reason: str  # one line


@dataclass(frozen=True)
class ActivityPage:
    rows: list[ActivityRow]
    next_after: int | None  # pass back as `after` for the next (older) page


@dataclass(frozen=True)
class AddressLine:
    """One address of the message: where it was found, and the rule that kept or
    discarded it (SPEC §4.6)."""

    address: str
    name: str
    where: list[str]
    kept: bool
    rule: str
    detail: str


@dataclass(frozen=True)
class ForwardedBlock:
    depth: int
    kind: str
    author: str | None
    date: str | None
    subject: str | None
    client: str | None


@dataclass(frozen=True)
class ActionLine:
    kind: str
    detail: str
    by: str
    at: datetime


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery's page: the processing record, what was made of it, what was done since."""

    id: int
    received_at: datetime
    finished_at: datetime | None
    dropbox: str
    rcpt_to: str  # the dropbox address, token redacted
    envelope_from: str
    author: str
    subject: str
    status: str
    reason: str
    sender_auth: str
    attempts: int
    has_raw: bool
    note_id: int | None
    addresses: list[AddressLine] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    forwarded: list[ForwardedBlock] = field(default_factory=list)
    actions: list[ActionLine] = field(default_factory=list)
    created_contacts: list[Ref] = field(default_factory=list)  # still there
    can_undo: bool = False
    can_retry: bool = False


@dataclass(frozen=True)
class FileData:
    """Bytes to download, with the name and type to offer them under."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class UndoResult:
    removed: list[str]
    kept: list[str]  # created by this delivery but referred to by something else since


@dataclass(frozen=True)
class NeverContactResult:
    pattern: str  # what went on the exclusion list: the address or its @domain
    deletable: Ref | None  # the contact this delivery created, nothing else referring to it


def list_activity(
    session: Session, user_id: int, *, status: str | None = None, after: int | None = None
) -> ActivityPage:
    """Every delivery to the user's dropboxes, newest first, a page at a time."""
    query = select(Delivery).where(Delivery.user_id == user_id)
    if status:
        query = query.where(Delivery.status == _status(status))
    if after is not None:
        query = query.where(Delivery.id < after)
    rows = list(session.scalars(query.order_by(Delivery.id.desc()).limit(ACTIVITY_PAGE + 1)))
    more = len(rows) > ACTIVITY_PAGE
    out = [
        ActivityRow(
            d.id,
            d.received_at,
            d.dropbox_kind,
            d.subject,
            d.author,
            d.status,
            d.reason.splitlines()[0] if d.reason else "",
        )
        for d in rows[:ACTIVITY_PAGE]
    ]
    return ActivityPage(out, out[-1].id if more else None)


def _status(value: str) -> DeliveryStatus:
    try:
        return DeliveryStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in DeliveryStatus)
        raise StoreError(f"{value!r} is not a delivery status (one of: {allowed})") from None


def _record(plan: dict[str, Any] | None) -> dict[str, Any]:
    """The typed parts of a stored plan (older rows may lack some)."""
    plan = plan or {}
    applied = plan.get("applied") or {}
    return {
        "addresses": [
            AddressLine(
                a.get("address", ""),
                a.get("name", ""),
                list(a.get("where") or []),
                bool(a.get("kept")),
                a.get("rule", ""),
                a.get("detail", ""),
            )
            for a in plan.get("addresses") or []
        ],
        "created": list(applied.get("created") or []),
        "linked": list(applied.get("linked") or []),
        "notices": list(plan.get("notices") or []),
        "forwarded": [
            ForwardedBlock(
                int(b.get("depth") or 0),
                str(b.get("kind") or ""),
                b.get("from"),
                b.get("date_text") or b.get("date"),
                b.get("subject"),
                b.get("client"),
            )
            for b in plan.get("forwarded") or []
        ],
    }


def _actions(session: Session, delivery_id: int) -> list[ActionLine]:
    rows = session.execute(
        select(DeliveryAction, User.email)
        .join(User, User.id == DeliveryAction.user_id)
        .where(DeliveryAction.delivery_id == delivery_id)
        .order_by(DeliveryAction.id)
    )
    return [ActionLine(a.kind, a.detail, email, a.created_at) for a, email in rows]


def get_delivery(session: Session, account_id: int, delivery_id: int) -> DeliveryDetail:
    """A delivery's processing record, the contacts it created, and the actions taken."""
    d = owned(session, Delivery, delivery_id, account_id, "delivery")
    created = [
        Ref(i, name)
        for i, name in session.execute(
            select(Contact.id, Contact.name).where(Contact.created_by_delivery_id == d.id)
        )
    ]
    has_raw = d.raw_digest is not None
    return DeliveryDetail(
        id=d.id,
        received_at=d.received_at,
        finished_at=d.finished_at,
        dropbox=d.dropbox_kind,
        rcpt_to=redact(d.rcpt_to),
        envelope_from=d.mail_from,
        author=d.author,
        subject=d.subject,
        status=d.status,
        reason=d.reason,
        sender_auth=d.sender_auth,
        attempts=d.attempts,
        has_raw=bool(has_raw),
        note_id=d.note_id,
        actions=_actions(session, d.id),
        created_contacts=created,
        can_undo=d.status in UNDOABLE,
        can_retry=bool(has_raw) and d.status in RETRYABLE,
        **_record(d.plan),
    )


def raw_message_file(session: Session, account_id: int, delivery_id: int) -> FileData:
    """The message exactly as received (a rejected one was not kept)."""
    d = owned(session, Delivery, delivery_id, account_id, "delivery")
    raw = d.raw
    if raw is None:
        raise NotFound(f"delivery #{delivery_id} kept no message")
    return FileData(f"delivery-{d.id}.eml", "message/rfc822", raw)


def note_original(session: Session, account_id: int, note_id: int) -> FileData:
    """A note's original email (`.eml`): the raw message of the delivery that filed it."""
    note = owned(session, Note, note_id, account_id, "note")
    raw = session.scalar(
        select(RawMessage.data)
        .join(Delivery, Delivery.raw_digest == RawMessage.digest)
        .where(Delivery.id == note.delivery_id)
    )
    if raw is None:
        raise NotFound(f"note #{note_id} has no original kept")
    return FileData(f"note-{note.id}.eml", "message/rfc822", raw)


def attachment_file(session: Session, account_id: int, attachment_id: int) -> FileData:
    """An attachment of a note of the account."""
    row = session.execute(
        select(Attachment.filename, Attachment.content_type, Attachment.data, Note.account_id)
        .join(Note, Note.id == Attachment.note_id)
        .where(Attachment.id == attachment_id)
    ).first()
    if row is None or row.account_id != account_id:
        raise NotFound(f"no attachment #{attachment_id}")
    return FileData(row.filename or f"attachment-{attachment_id}", row.content_type, row.data)


def _log(
    session: Session, delivery: Delivery, user_id: int, kind: ActionKind, detail: str, now: datetime
) -> None:
    session.add(
        DeliveryAction(
            delivery_id=delivery.id, user_id=user_id, kind=kind.value, detail=detail, created_at=now
        )
    )


def _refers_elsewhere(session: Session, contact_id: int, note_id: int | None) -> bool:
    """Whether anything but the note `note_id` names the contact (links to records)."""
    for table, other in LINKS:
        query = select(table.c[other]).where(table.c.contact_id == contact_id)
        if table is note_contacts and note_id is not None:
            query = query.where(table.c.note_id != note_id)
        if session.execute(query.limit(1)).first() is not None:
            return True
    return False


def _remove_note(session: Session, note_id: int) -> None:
    """A note, its attachments and links; other rows pointing at it let go of it."""
    for table in (note_contacts, note_companies, note_cases, note_opportunities):
        session.execute(delete(table).where(table.c.note_id == note_id))
    session.execute(delete(Attachment).where(Attachment.note_id == note_id))
    session.execute(update(Task).where(Task.note_id == note_id).values(note_id=None))
    session.execute(update(Delivery).where(Delivery.note_id == note_id).values(note_id=None))
    session.execute(delete(Note).where(Note.id == note_id))


def _remove_tasks(session: Session, delivery_id: int) -> list[str]:
    tasks = list(session.scalars(select(Task).where(Task.delivery_id == delivery_id)))
    for task in tasks:
        session.execute(delete(task_contacts).where(task_contacts.c.task_id == task.id))
        session.execute(delete(Task).where(Task.id == task.id))
    return [f"task {t.title!r}" for t in tasks]


def _remove_records(session: Session, delivery_id: int) -> tuple[list[str], list[str]]:
    """Cases and opportunities this delivery created that no other note is filed under."""
    removed: list[str] = []
    kept: list[str] = []
    for kind in (CASES, OPPORTUNITIES):
        model = kind.model
        records = cast(
            "list[Case | Opportunity]",
            list(session.scalars(select(model).where(model.created_by_delivery_id == delivery_id))),
        )
        for record in records:
            label = f"{kind.prefix}{record.ref_no}"
            notes = select(kind.notes.c.note_id).where(kind.notes.c[kind.column] == record.id)
            if session.execute(notes.limit(1)).first() is not None:
                kept.append(f"{label} (other notes are filed under it)")
                continue
            session.execute(delete(kind.contacts).where(kind.contacts.c[kind.column] == record.id))
            session.execute(delete(model).where(model.id == record.id))
            removed.append(label)
    return removed, kept


def undo_filing(
    session: Session, account_id: int, user_id: int, delivery_id: int, *, now: datetime
) -> UndoResult:
    """Take a filing back: remove its note, and the tasks, cases, opportunities and
    contacts it created unless something else refers to them by now. (Filing creates no
    companies.) The delivery becomes `undone` and can be filed again with Retry."""
    d = owned(session, Delivery, delivery_id, account_id, "delivery")
    if d.status not in UNDOABLE:
        raise StoreError(_why_not_undoable(d))
    note_id = session.scalar(select(Note.id).where(Note.delivery_id == d.id))
    removed = _remove_tasks(session, d.id)
    if note_id is not None:
        # The record kept the note's texts in the note (`serialize.recorded_plan`): it
        # keeps them itself once the note is gone.
        d.plan = plan_with_note_texts(d.plan, session.get(Note, note_id))
        _remove_note(session, note_id)
        removed.append(f"note #{note_id}")
    records, kept = _remove_records(session, d.id)
    removed += records
    gone: list[int] = []
    for contact in session.scalars(select(Contact).where(Contact.created_by_delivery_id == d.id)):
        if _refers_elsewhere(session, contact.id, None):
            kept.append(f"contact {contact.name} (other notes or records refer to it)")
        else:
            gone.append(contact.id)
            removed.append(f"contact {contact.name}")
    remove_contact_rows(session, gone)
    d.status = DeliveryStatus.UNDONE.value
    d.note_id = None
    d.reason = "filing undone; Retry files it again"
    detail = "removed " + (", ".join(removed) or "nothing")
    if kept:
        detail += "; kept " + ", ".join(kept)
    _log(session, d, user_id, ActionKind.UNDO, detail, now)
    session.flush()
    return UndoResult(removed, kept)


def _why_not_undoable(d: Delivery) -> str:
    if d.status == DeliveryStatus.DUPLICATE:
        return (
            f"delivery #{d.id} filed nothing of its own (the message was filed before): "
            "undo the delivery that filed it"
        )
    if d.status == DeliveryStatus.UNDONE:
        return f"delivery #{d.id} is undone already"
    return f"delivery #{d.id} filed nothing to undo (it is {d.status})"


def never_contact(
    session: Session,
    account_id: int,
    user_id: int,
    delivery_id: int,
    address: str,
    *,
    whole_domain: bool,
    now: datetime,
) -> NeverContactResult:
    """Put an address of this delivery (or its whole @domain) on the account's exclusion
    list (SPEC §1.3), and name the contact this delivery made of it if nothing else
    refers to it, so the page can offer to delete it."""
    d = owned(session, Delivery, delivery_id, account_id, "delivery")
    seen = {a.address for a in _record(d.plan)["addresses"]}
    if address not in seen:
        raise StoreError(f"{address} is not an address of delivery #{d.id}")
    pattern = "@" + address.rsplit("@", 1)[1] if whole_domain else address
    account = session.get(Account, account_id)
    assert account is not None
    entry = add_exclusion(session, account.name, pattern)
    _log(session, d, user_id, ActionKind.NEVER_CONTACT, f"excluded {entry.pattern}", now)
    contact = session.execute(
        select(Contact.id, Contact.name)
        .join(ContactEmail, ContactEmail.contact_id == Contact.id)
        .where(ContactEmail.account_id == account_id, ContactEmail.email == address)
        .where(Contact.created_by_delivery_id == d.id)
    ).first()
    deletable = None
    if contact is not None and not _refers_elsewhere(session, contact.id, d.note_id):
        deletable = Ref(contact.id, contact.name)
    session.flush()
    return NeverContactResult(entry.pattern, deletable)


def delete_created_contact(
    session: Session,
    account_id: int,
    user_id: int,
    delivery_id: int,
    contact_id: int,
    *,
    now: datetime,
) -> None:
    """Delete a contact this delivery created (the offer after "never a contact"):
    refused if another note or record refers to it by now."""
    d = owned(session, Delivery, delivery_id, account_id, "delivery")
    contact = owned(session, Contact, contact_id, account_id, "contact")
    if contact.created_by_delivery_id != d.id:
        raise StoreError(f"contact {contact.name} was not created by delivery #{d.id}")
    if _refers_elsewhere(session, contact.id, d.note_id):
        raise StoreError(f"contact {contact.name} is referred to by other notes or records now")
    remove_contact_rows(session, [contact.id])
    _log(session, d, user_id, ActionKind.DELETE_CONTACT, f"deleted contact {contact.name}", now)
    session.flush()


def retry_delivery(
    session: Session, account_id: int, user_id: int, delivery_id: int, *, now: datetime
) -> None:
    """Queue a failed, undone or unfiled (no contact) delivery again, due now."""
    d = owned(session, Delivery, delivery_id, account_id, "delivery")
    if d.status not in RETRYABLE:
        raise StoreError(
            f"delivery #{d.id} is {d.status}: only a failed, undone or unfiled one is retried"
        )
    try:
        inbound.retry(session, d.id, now=now)
    except LookupError as exc:
        raise StoreError(f"delivery #{d.id} kept no message to file again") from exc
    _log(session, d, user_id, ActionKind.RETRY, f"queued again (was {d.status})", now)
    session.flush()
