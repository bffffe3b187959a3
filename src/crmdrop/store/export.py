"""An account as JSON: what `crmdrop export` prints and the API serves.

Every field is documented in docs/export.md.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from crmdrop.dropbox.address import redact
from crmdrop.store.accounts import get_account
from crmdrop.store.models import (
    Attachment,
    Case,
    Company,
    CompanyEmail,
    Contact,
    ContactEmail,
    Delivery,
    Note,
    Opportunity,
    Outbox,
    Task,
    User,
    case_contacts,
    note_cases,
    note_companies,
    note_contacts,
    note_opportunities,
    opportunity_contacts,
    task_contacts,
)


def _pairs(
    session: Session, table: Table, left: str, right: str, owner: Any, account_id: int
) -> dict[int, list[int]]:
    """The rows of a link table whose left side (a note, case, ...) is in the account."""
    out: dict[int, list[int]] = defaultdict(list)
    query = (
        select(table.c[left], table.c[right])
        .join(owner, owner.id == table.c[left])
        .where(owner.account_id == account_id)
    )
    for a, b in session.execute(query).all():
        out[a].append(b)
    return out


def delivery_json(d: Delivery, *, full: bool = False) -> dict[str, Any]:
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
        row["plan"] = d.plan
    return row


def export_account(session: Session, name: str) -> dict[str, Any]:
    account = get_account(session, name)
    aid = account.id
    companies = session.scalars(select(Company).where(Company.account_id == aid)).all()
    company_name = {c.id: c.name for c in companies}
    company_emails: dict[int, list[str]] = defaultdict(list)
    for company_email in session.scalars(
        select(CompanyEmail).where(CompanyEmail.account_id == aid)
    ):
        company_emails[company_email.company_id].append(company_email.email)
    contacts = session.scalars(
        select(Contact).where(Contact.account_id == aid).order_by(Contact.id)
    ).all()
    emails: dict[int, list[str]] = defaultdict(list)
    for ce in session.scalars(
        select(ContactEmail).where(ContactEmail.account_id == aid).order_by(ContactEmail.id)
    ):
        emails[ce.contact_id].append(ce.email)
    primary = {cid: e[0] for cid, e in emails.items() if e}
    cases = {c.id: c for c in session.scalars(select(Case).where(Case.account_id == aid))}
    opps = {
        o.id: o for o in session.scalars(select(Opportunity).where(Opportunity.account_id == aid))
    }
    n_contacts = _pairs(session, note_contacts, "note_id", "contact_id", Note, aid)
    n_companies = _pairs(session, note_companies, "note_id", "company_id", Note, aid)
    n_cases = _pairs(session, note_cases, "note_id", "case_id", Note, aid)
    n_opps = _pairs(session, note_opportunities, "note_id", "opportunity_id", Note, aid)
    c_contacts = _pairs(session, case_contacts, "case_id", "contact_id", Case, aid)
    o_contacts = _pairs(
        session, opportunity_contacts, "opportunity_id", "contact_id", Opportunity, aid
    )
    t_contacts = _pairs(session, task_contacts, "task_id", "contact_id", Task, aid)
    attachments: dict[int, list[str]] = defaultdict(list)
    for note_id, filename in session.execute(
        select(Attachment.note_id, Attachment.filename)
        .join(Note, Note.id == Attachment.note_id)
        .where(Note.account_id == aid)
        .order_by(Attachment.id)
    ):
        attachments[note_id].append(filename)
    users = {u.id: u.email for u in session.scalars(select(User).where(User.account_id == aid))}

    def contact_emails(ids: list[int]) -> list[str]:
        return sorted(primary[i] for i in ids if i in primary)

    notes = session.scalars(select(Note).where(Note.account_id == aid).order_by(Note.id)).all()
    tasks = session.scalars(select(Task).where(Task.account_id == aid).order_by(Task.id)).all()
    deliveries = session.scalars(
        select(Delivery).where(Delivery.account_id == aid).order_by(Delivery.id)
    ).all()
    replies = session.scalars(
        select(Outbox).where(Outbox.account_id == aid).order_by(Outbox.id)
    ).all()
    return {
        "account": account.name,
        "preferences": {
            "file_under_companies": account.file_under_companies,
            "discard_automated": account.discard_automated,
        },
        "users": sorted(users.values()),
        "contacts": [
            {
                "id": c.id,
                "name": c.name,
                "emails": emails.get(c.id, []),
                "company": company_name.get(c.company_id) if c.company_id else None,
            }
            for c in contacts
        ],
        "companies": [
            {"id": c.id, "name": c.name, "domain": c.domain, "emails": company_emails[c.id]}
            for c in companies
        ],
        "notes": [
            {
                "id": n.id,
                "subject": n.subject,
                "date": n.sent_at.isoformat() if n.sent_at else None,
                "author": n.author_name,
                "author_email": n.author_email,
                "direction": n.direction,
                "is_forward": n.is_forward,
                "filed_by": users.get(n.user_id),
                "delivery_id": n.delivery_id,
                "message_id": n.message_id,
                "contacts": contact_emails(n_contacts.get(n.id, [])),
                "companies": sorted(company_name[i] for i in n_companies.get(n.id, [])),
                "cases": sorted(f"CA{cases[i].ref_no}" for i in n_cases.get(n.id, [])),
                "opportunities": sorted(f"CO{opps[i].ref_no}" for i in n_opps.get(n.id, [])),
                "attachments": attachments.get(n.id, []),
                "body": n.body,
                "own_text": n.own_text,
            }
            for n in notes
        ],
        "cases": [
            {
                "ref": f"CA{c.ref_no}",
                "title": c.title,
                "status": c.status,
                "contacts": contact_emails(c_contacts.get(c.id, [])),
            }
            for c in sorted(cases.values(), key=lambda c: c.ref_no)
        ],
        "opportunities": [
            {
                "ref": f"CO{o.ref_no}",
                "title": o.title,
                "status": o.status,
                "contacts": contact_emails(o_contacts.get(o.id, [])),
            }
            for o in sorted(opps.values(), key=lambda o: o.ref_no)
        ],
        "tasks": [
            {
                "id": t.id,
                "title": t.title,
                "description": t.description,
                "due": t.due_date.isoformat() if t.due_date else None,
                "due_kind": t.due_kind,
                "timezone": t.timezone,
                "owner": users.get(t.user_id),
                "contacts": contact_emails(t_contacts.get(t.id, [])),
            }
            for t in tasks
        ],
        "deliveries": [delivery_json(d) for d in deliveries],
        "replies": [
            {"to": r.mail_to, "kind": r.kind, "status": r.status, "delivery_id": r.delivery_id}
            for r in replies
        ],
    }
