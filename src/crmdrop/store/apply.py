"""Carry a FilingPlan out inside the caller's transaction (DESIGN step 5).

Idempotent per account: a note is unique on (account, message_key); for a
message filed before, only links that are new are added (SPEC §6.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from crmdrop.dropbox.plan import FilingPlan, Outcome
from crmdrop.mail.model import ParsedMessage
from crmdrop.store.models import (
    Account,
    Attachment,
    Case,
    Contact,
    ContactEmail,
    Delivery,
    Note,
    Opportunity,
    Task,
    case_contacts,
    note_cases,
    note_companies,
    note_contacts,
    note_opportunities,
    opportunity_contacts,
    task_contacts,
)


def _link(
    session: Session, table: Table, left: str, left_id: int, right: str, ids: Iterable[int]
) -> None:
    """Insert the (left_id, id) pairs of an association table that are not there yet."""
    wanted = set(ids)
    if not wanted:
        return
    have = set(
        session.scalars(
            select(table.c[right]).where(table.c[left] == left_id, table.c[right].in_(wanted))
        ).all()
    )
    rows = [{left: left_id, right: i} for i in sorted(wanted - have)]
    if rows:
        session.execute(insert(table), rows)


def _new_record(
    session: Session, account: Account, kind: str, title: str, user_id: int, now: datetime
) -> Case | Opportunity:
    record: Case | Opportunity
    if kind == "case":
        ref = account.next_case_ref
        account.next_case_ref = ref + 1
        record = Case(
            account_id=account.id, ref_no=ref, title=title, user_id=user_id, created_at=now
        )
    else:
        ref = account.next_opp_ref
        account.next_opp_ref = ref + 1
        record = Opportunity(
            account_id=account.id, ref_no=ref, title=title, user_id=user_id, created_at=now
        )
    session.add(record)
    session.flush()
    return record


def apply_plan(
    session: Session,
    plan: FilingPlan,
    *,
    delivery: Delivery,
    parsed: ParsedMessage,
    account: Account,
    now: datetime,
) -> dict[str, list[str]]:
    """File what the plan says; return what was created and linked, for the record."""
    done: dict[str, list[str]] = {"created": [], "linked": []}
    if plan.outcome is Outcome.NO_CONTACT:
        return done

    contact_ids: list[int] = []
    company_ids: list[int] = []
    for action in plan.contacts:
        if action.action == "link_company" and action.company_id is not None:
            company_ids.append(action.company_id)
            done["linked"].append(f"company {action.address}")
            continue
        contact_id = action.contact_id
        if action.action == "create_contact":
            existing = session.scalar(
                select(ContactEmail.contact_id).where(
                    ContactEmail.account_id == account.id, ContactEmail.email == action.address
                )
            )
            if existing is None:
                contact = Contact(
                    account_id=account.id,
                    name=action.name,
                    company_id=action.company_for_new,
                    created_by_delivery_id=delivery.id,
                    created_at=now,
                )
                session.add(contact)
                session.flush()
                session.add(
                    ContactEmail(account_id=account.id, contact_id=contact.id, email=action.address)
                )
                contact_id = contact.id
                done["created"].append(f"contact {action.name} <{action.address}>")
            else:
                contact_id = existing
        else:
            done["linked"].append(f"contact {action.address}")
        if contact_id is not None:
            contact_ids.append(contact_id)
    session.flush()

    if account.file_under_companies and contact_ids:
        company_ids.extend(
            cid
            for cid in session.scalars(
                select(Contact.company_id).where(Contact.id.in_(contact_ids))
            ).all()
            if cid is not None
        )

    case_ids: list[int] = []
    opp_ids: list[int] = []
    for record in plan.records:
        record_id = record.record_id
        if record.action == "create" or record_id is None:
            made = _new_record(
                session, account, record.kind, record.title or "(no subject)", delivery.user_id, now
            )
            record_id = made.id
            prefix = "CA" if record.kind == "case" else "CO"
            done["created"].append(f"{record.kind} {prefix}{made.ref_no}")
        else:
            done["linked"].append(f"{record.kind} {record.ref}")
        (case_ids if record.kind == "case" else opp_ids).append(record_id)
    for case_id in case_ids:
        _link(session, case_contacts, "case_id", case_id, "contact_id", contact_ids)
    for opp_id in opp_ids:
        _link(session, opportunity_contacts, "opportunity_id", opp_id, "contact_id", contact_ids)

    note_id: int | None = plan.note_id
    if note_id is None and plan.note is not None:
        draft = plan.note
        note = Note(
            account_id=account.id,
            user_id=delivery.user_id,
            delivery_id=delivery.id,
            message_key=plan.message_key,
            message_id=parsed.message_id,
            subject=draft.subject,
            body=draft.body,
            own_text=draft.own_text,
            author_name=draft.author_name,
            author_email=draft.author_email,
            sent_at=draft.date,
            direction=draft.direction,
            is_forward=draft.is_forward,
            created_at=now,
        )
        session.add(note)
        session.flush()
        note_id = note.id
        for part in parsed.attachments:
            session.add(
                Attachment(
                    note_id=note.id,
                    filename=part.filename[:500],
                    content_type=part.content_type[:200],
                    size=len(part.data),
                    data=part.data,
                )
            )
        done["created"].append(f"note #{note.id}")
    if note_id is not None:
        _link(session, note_contacts, "note_id", note_id, "contact_id", contact_ids)
        _link(session, note_companies, "note_id", note_id, "company_id", company_ids)
        _link(session, note_cases, "note_id", note_id, "case_id", case_ids)
        _link(session, note_opportunities, "note_id", note_id, "opportunity_id", opp_ids)
        delivery.note_id = note_id

    if plan.task is not None:
        exists = session.scalar(
            select(Task.id).where(
                Task.account_id == account.id,
                Task.user_id == delivery.user_id,
                Task.message_key == plan.message_key,
                Task.due_kind == plan.task.due_kind,
            )
        )
        if exists is None:
            task = Task(
                account_id=account.id,
                user_id=delivery.user_id,
                delivery_id=delivery.id,
                note_id=note_id,
                message_key=plan.message_key,
                title=plan.task.title,
                description=plan.task.description,
                due_date=plan.task.due,
                due_kind=plan.task.due_kind,
                timezone=plan.task.timezone,
                created_at=now,
            )
            session.add(task)
            session.flush()
            _link(session, task_contacts, "task_id", task.id, "contact_id", contact_ids)
            due = plan.task.due.isoformat() if plan.task.due else "no deadline"
            done["created"].append(f"task #{task.id} ({due})")
    session.flush()
    return done
