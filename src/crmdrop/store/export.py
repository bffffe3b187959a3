"""An account as JSON: what `crmdrop export` prints and the API serves.

The shapes are `store.serialize`'s; this module reads the account in bulk.

Every field is documented in docs/export.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

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
from crmdrop.store.serialize import (
    NoteLinks,
    case_json,
    company_json,
    contact_json,
    delivery_json,
    note_json,
    opportunity_json,
    reply_json,
    task_json,
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


@dataclass(frozen=True)
class _Links:
    """Every link of the account's notes, cases, opportunities and tasks, read in bulk."""

    note_contacts: dict[int, list[int]]
    note_companies: dict[int, list[int]]
    note_cases: dict[int, list[int]]
    note_opps: dict[int, list[int]]
    case_contacts: dict[int, list[int]]
    opp_contacts: dict[int, list[int]]
    task_contacts: dict[int, list[int]]
    attachments: dict[int, list[str]]


def _links(session: Session, aid: int) -> _Links:
    attachments: dict[int, list[str]] = defaultdict(list)
    for note_id, filename in session.execute(
        select(Attachment.note_id, Attachment.filename)
        .join(Note, Note.id == Attachment.note_id)
        .where(Note.account_id == aid)
        .order_by(Attachment.id)
    ):
        attachments[note_id].append(filename)
    return _Links(
        note_contacts=_pairs(session, note_contacts, "note_id", "contact_id", Note, aid),
        note_companies=_pairs(session, note_companies, "note_id", "company_id", Note, aid),
        note_cases=_pairs(session, note_cases, "note_id", "case_id", Note, aid),
        note_opps=_pairs(session, note_opportunities, "note_id", "opportunity_id", Note, aid),
        case_contacts=_pairs(session, case_contacts, "case_id", "contact_id", Case, aid),
        opp_contacts=_pairs(
            session, opportunity_contacts, "opportunity_id", "contact_id", Opportunity, aid
        ),
        task_contacts=_pairs(session, task_contacts, "task_id", "contact_id", Task, aid),
        attachments=attachments,
    )


def _emails_by(session: Session, model: Any, aid: int, key: str) -> dict[int, list[str]]:
    """Each contact's (or company's) addresses, in the order they were added."""
    out: dict[int, list[str]] = defaultdict(list)
    for row in session.scalars(select(model).where(model.account_id == aid).order_by(model.id)):
        out[getattr(row, key)].append(row.email)
    return out


def _all(session: Session, model: Any, aid: int) -> list[Any]:
    """Every row of `model` in the account, oldest first."""
    return list(session.scalars(select(model).where(model.account_id == aid).order_by(model.id)))


def export_account(session: Session, name: str) -> dict[str, Any]:
    """The whole account, one consistent read (the caller's transaction)."""
    account = get_account(session, name)
    aid = account.id
    companies = _all(session, Company, aid)
    company_name = {c.id: c.name for c in companies}
    company_emails = _emails_by(session, CompanyEmail, aid, "company_id")
    contacts = _all(session, Contact, aid)
    emails = _emails_by(session, ContactEmail, aid, "contact_id")
    primary = {cid: e[0] for cid, e in emails.items() if e}
    cases = sorted(_all(session, Case, aid), key=lambda c: c.ref_no)
    opps = sorted(_all(session, Opportunity, aid), key=lambda o: o.ref_no)
    links = _links(session, aid)
    users = {u.id: u.email for u in _all(session, User, aid)}

    def contact_emails(ids: list[int]) -> list[str]:
        return sorted(primary[i] for i in ids if i in primary)

    return {
        "account": account.name,
        "preferences": {
            "file_under_companies": account.file_under_companies,
            "discard_automated": account.discard_automated,
        },
        "users": sorted(users.values()),
        "contacts": [
            contact_json(
                c,
                emails=emails.get(c.id, []),
                company=company_name.get(c.company_id) if c.company_id else None,
            )
            for c in contacts
        ],
        "companies": [company_json(c, emails=company_emails[c.id]) for c in companies],
        "notes": _notes(session, aid, links, contact_emails, company_name, cases, opps, users),
        "cases": [
            case_json(c, contacts=contact_emails(links.case_contacts.get(c.id, []))) for c in cases
        ],
        "opportunities": [
            opportunity_json(o, contacts=contact_emails(links.opp_contacts.get(o.id, [])))
            for o in opps
        ],
        "tasks": [
            task_json(
                t,
                owner=users.get(t.user_id),
                contacts=contact_emails(links.task_contacts.get(t.id, [])),
            )
            for t in _all(session, Task, aid)
        ],
        "deliveries": [delivery_json(d) for d in _all(session, Delivery, aid)],
        "replies": [reply_json(r) for r in _all(session, Outbox, aid)],
    }


def _notes(
    session: Session,
    aid: int,
    links: _Links,
    contact_emails: Callable[[list[int]], list[str]],
    company_name: dict[int, str],
    cases: list[Case],
    opps: list[Opportunity],
    users: dict[int, str],
) -> list[dict[str, Any]]:
    """Every note of the account in full, with what it is filed under by name."""
    case_ref = {c.id: f"CA{c.ref_no}" for c in cases}
    opp_ref = {o.id: f"CO{o.ref_no}" for o in opps}
    return [
        note_json(
            n,
            filed_by=users.get(n.user_id),
            links=NoteLinks(
                contacts=contact_emails(links.note_contacts.get(n.id, [])),
                companies=sorted(company_name[i] for i in links.note_companies.get(n.id, [])),
                cases=sorted(case_ref[i] for i in links.note_cases.get(n.id, [])),
                opportunities=sorted(opp_ref[i] for i in links.note_opps.get(n.id, [])),
                attachments=links.attachments.get(n.id, []),
            ),
        )
        for n in _all(session, Note, aid)
    ]
