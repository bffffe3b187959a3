"""Companies as a user browses them: the list and one company's page (SPEC §5.4, §1.4)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from crmdrop.store.models import (
    Account,
    Company,
    CompanyEmail,
    Contact,
    Note,
    note_companies,
    note_contacts,
)
from crmdrop.store.scope import owned
from crmdrop.store.timeline import Ref, Timeline, read_timeline

LIST_LIMIT = 200


@dataclass(frozen=True)
class CompanyRow:
    id: int
    name: str
    domain: str | None
    people: int  # how many contacts belong to it


@dataclass(frozen=True)
class CompanyDetail:
    """A company's page: its addresses, domain, people and notes (newest first).

    `includes_people_notes`: the account files contact notes under their companies
    too (SPEC §1.4), so the timeline shows its people's notes beside its own."""

    id: int
    name: str
    domain: str | None
    emails: list[str]
    people: list[Ref]
    includes_people_notes: bool
    timeline: Timeline


def list_companies(session: Session, account_id: int, *, search: str = "") -> list[CompanyRow]:
    """The account's companies by name (the first LIST_LIMIT), with their head count;
    `search` matches the name or the domain."""
    people = (
        select(Contact.company_id, func.count().label("n"))
        .where(Contact.account_id == account_id, Contact.company_id.is_not(None))
        .group_by(Contact.company_id)
        .subquery()
    )
    query = (
        select(Company.id, Company.name, Company.domain, func.coalesce(people.c.n, 0))
        .outerjoin(people, people.c.company_id == Company.id)
        .where(Company.account_id == account_id)
    )
    t = search.strip().lower()
    if t:
        query = query.where(
            or_(
                func.lower(Company.name).contains(t, autoescape=True),
                Company.domain.contains(t, autoescape=True),
            )
        )
    rows = session.execute(query.order_by(Company.name, Company.id).limit(LIST_LIMIT))
    return [CompanyRow(i, name, domain, int(n)) for i, name, domain, n in rows]


def get_company(
    session: Session, account_id: int, company_id: int, *, after: str | None = None
) -> CompanyDetail:
    """A company with its addresses, people and a page of its notes."""
    company = owned(session, Company, company_id, account_id, "company")
    account = session.get(Account, account_id)
    with_people = bool(account and account.file_under_companies)
    emails = list(
        session.scalars(
            select(CompanyEmail.email)
            .where(CompanyEmail.company_id == company.id)
            .order_by(CompanyEmail.id)
        )
    )
    people = [
        Ref(i, name)
        for i, name in session.execute(
            select(Contact.id, Contact.name)
            .where(Contact.company_id == company.id)
            .order_by(Contact.name, Contact.id)
        )
    ]
    own = select(note_companies.c.note_id).where(note_companies.c.company_id == company.id)
    condition: ColumnElement[bool] = Note.id.in_(own)
    if with_people:
        theirs = (
            select(note_contacts.c.note_id)
            .join(Contact, Contact.id == note_contacts.c.contact_id)
            .where(Contact.company_id == company.id)
        )
        condition = or_(condition, Note.id.in_(theirs))
    query = select(Note.id).where(Note.account_id == account_id, condition)
    return CompanyDetail(
        id=company.id,
        name=company.name,
        domain=company.domain,
        emails=emails,
        people=people,
        includes_people_notes=with_people,
        timeline=read_timeline(session, query, Note.id, after),
    )
