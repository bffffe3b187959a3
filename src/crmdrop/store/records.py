"""Read side of cases, opportunities, tasks and companies, plus the company/preference
writes the CLI offers (SPEC §1.4, §5). Plain dicts out, JSON-ready, in the shapes of
`store.serialize`, so the CLI, the pages and the API print the same thing as `export`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from crmdrop.dropbox.names import is_free_mail
from crmdrop.mail.addresses import is_plausible_address, normalize_address, normalize_domain
from crmdrop.store.accounts import StoreError, add_company, get_account, get_user, set_preference
from crmdrop.store.models import (
    Account,
    Case,
    Company,
    CompanyEmail,
    Contact,
    ContactEmail,
    Note,
    Opportunity,
    Task,
    User,
    case_contacts,
    note_cases,
    note_opportunities,
    opportunity_contacts,
    task_contacts,
)
from crmdrop.store.serialize import (
    RecordDetail,
    company_json,
    note_json,
    record_json,
    task_json,
)

__all__ = [
    "PREFERENCES",
    "RecordKind",
    "create_company",
    "list_companies",
    "list_records",
    "list_tasks",
    "parse_ref",
    "preferences",
    "show_record",
    "update_preference",
]

PREFERENCES = ("file-under-companies", "discard-automated")


class RecordKind:
    """What differs between cases and opportunities: model, link tables, prefix."""

    def __init__(
        self,
        name: str,
        model: type[Case] | type[Opportunity],
        prefix: str,
        contacts: Table,
        notes: Table,
        column: str,
    ) -> None:
        self.name = name
        self.model = model
        self.prefix = prefix
        self.contacts = contacts  # (<column>, contact_id)
        self.notes = notes  # (note_id, <column>)
        self.column = column


CASES = RecordKind("case", Case, "CA", case_contacts, note_cases, "case_id")
OPPORTUNITIES = RecordKind(
    "opportunity", Opportunity, "CO", opportunity_contacts, note_opportunities, "opportunity_id"
)

_REF = re.compile(r"^#?(?:(CA|CO))?0*(\d{1,9})$", re.IGNORECASE)


def parse_ref(text: str, kind: RecordKind) -> int:
    """The number in `CA12`, `#CA12` or `12`; a reference of the other kind is refused."""
    m = _REF.match(text.strip())
    if m is None:
        raise StoreError(f"{text!r} is not a {kind.name} reference (like {kind.prefix}12 or 12)")
    prefix = (m.group(1) or kind.prefix).upper()
    if prefix != kind.prefix:
        raise StoreError(f"{text!r} is not a {kind.name} reference ({kind.prefix}<n>)")
    return int(m.group(2))


def _primary_emails(session: Session, contact_ids: set[int]) -> dict[int, str]:
    """Each contact's first address (the one `export` shows), by contact id."""
    out: dict[int, str] = {}
    if not contact_ids:
        return out
    rows = session.execute(
        select(ContactEmail.contact_id, ContactEmail.email)
        .where(ContactEmail.contact_id.in_(contact_ids))
        .order_by(ContactEmail.id)
    )
    for contact_id, email in rows:
        out.setdefault(contact_id, email)
    return out


def _contacts_of(
    session: Session, table: Table, column: str, ids: list[int]
) -> dict[int, list[str]]:
    """Contact addresses linked through `table`, sorted, by record id."""
    if not ids:
        return {}
    pairs = session.execute(
        select(table.c[column], table.c.contact_id).where(table.c[column].in_(ids))
    ).all()
    emails = _primary_emails(session, {c for _, c in pairs})
    out: dict[int, list[str]] = defaultdict(list)
    for record_id, contact_id in pairs:
        if contact_id in emails:
            out[record_id].append(emails[contact_id])
    return {k: sorted(v) for k, v in out.items()}


def _users(session: Session, account: Account) -> dict[int, str]:
    return dict(
        session.execute(select(User.id, User.email).where(User.account_id == account.id)).all()
    )


def list_records(session: Session, account_name: str, kind: RecordKind) -> list[dict[str, Any]]:
    """Every case (or opportunity) of the account by reference number, with its contacts."""
    account = get_account(session, account_name)
    model = kind.model
    records = cast(
        "Sequence[Case | Opportunity]",
        session.scalars(
            select(model).where(model.account_id == account.id).order_by(model.ref_no)
        ).all(),
    )
    ids = [r.id for r in records]
    contacts = _contacts_of(session, kind.contacts, kind.column, ids)
    counts: dict[int, int] = {}
    if ids:
        column = kind.notes.c[kind.column]
        counts = dict(
            session.execute(
                select(column, func.count()).where(column.in_(ids)).group_by(column)
            ).all()
        )
    users = _users(session, account)
    return [
        record_json(
            r,
            kind.prefix,
            contacts=contacts.get(r.id, []),
            detail=RecordDetail(
                owner=users.get(r.user_id) if r.user_id else None, notes=counts.get(r.id, 0)
            ),
        )
        for r in records
    ]


def show_record(session: Session, account_name: str, kind: RecordKind, ref: str) -> dict[str, Any]:
    """One case (or opportunity) with its contacts and the notes filed to it, oldest first."""
    account = get_account(session, account_name)
    number = parse_ref(ref, kind)
    model = kind.model
    record = cast(
        "Case | Opportunity | None",
        session.scalar(select(model).where(model.account_id == account.id, model.ref_no == number)),
    )
    if record is None:
        raise StoreError(f"no {kind.name} {kind.prefix}{number} in account {account_name!r}")
    names = dict(
        session.execute(
            select(Contact.id, Contact.name)
            .join(kind.contacts, kind.contacts.c.contact_id == Contact.id)
            .where(kind.contacts.c[kind.column] == record.id)
        ).all()
    )
    emails = _primary_emails(session, set(names))
    notes = session.scalars(
        select(Note)
        .join(kind.notes, kind.notes.c.note_id == Note.id)
        .where(kind.notes.c[kind.column] == record.id)
        .order_by(Note.id)
    ).all()
    users = _users(session, account)
    contacts = sorted(
        ({"name": names[i], "email": emails.get(i)} for i in names),
        key=lambda c: c["email"] or "",
    )
    return record_json(
        record,
        kind.prefix,
        contacts=contacts,
        detail=RecordDetail(
            owner=users.get(record.user_id) if record.user_id else None,
            notes=[note_json(n, filed_by=users.get(n.user_id)) for n in notes],
        ),
    )


def list_tasks(
    session: Session, account_name: str, user_email: str | None = None
) -> list[dict[str, Any]]:
    """The account's tasks (or one user's), oldest first."""
    account = get_account(session, account_name)
    query = select(Task).where(Task.account_id == account.id).order_by(Task.id)
    if user_email is not None:
        user = get_user(session, user_email)
        if user.account_id != account.id:
            raise StoreError(f"user {user.email} is not in account {account_name!r}")
        query = query.where(Task.user_id == user.id)
    tasks = session.scalars(query).all()
    contacts = _contacts_of(session, task_contacts, "task_id", [t.id for t in tasks])
    users = _users(session, account)
    return [
        task_json(t, owner=users.get(t.user_id), contacts=contacts.get(t.id, []), with_done=True)
        for t in tasks
    ]


def _domain(domain: str) -> str:
    """A company domain as contacts' addresses spell it (lowercase, IDN normalized)."""
    value = normalize_domain(domain)
    if "." not in value or not is_plausible_address("x@" + value):
        raise StoreError(f"{domain!r} is not a domain")
    return value


def create_company(
    session: Session, name: str, *, account: str, domain: str | None, emails: list[str]
) -> Company:
    """A company that matches by domain and by its own addresses (SPEC §5.4).

    A free-mail domain is refused: it says nothing about anyone's company, and new
    contacts there are never linked to one. An address that already belongs to a company
    or a contact of the account is refused too, so an address matches one thing.
    """
    if not name.strip():
        raise StoreError("a company needs a name")
    acc = get_account(session, account)
    dom = _domain(domain) if domain else None
    if dom is not None and is_free_mail(dom):
        raise StoreError(f"{dom} is a free-mail domain: it cannot identify a company")
    normalized: list[str] = []
    for email in emails:
        address = normalize_address(email)
        if not is_plausible_address(address):
            raise StoreError(f"{email!r} is not a valid email address")
        taken = session.scalar(
            select(CompanyEmail.id).where(
                CompanyEmail.account_id == acc.id, CompanyEmail.email == address
            )
        ) or session.scalar(
            select(ContactEmail.id).where(
                ContactEmail.account_id == acc.id, ContactEmail.email == address
            )
        )
        if taken is not None:
            raise StoreError(f"{address} already belongs to a contact or company of {account!r}")
        if address not in normalized:
            normalized.append(address)
    return add_company(session, name.strip(), account=account, domain=dom, emails=normalized)


def list_companies(session: Session, account_name: str) -> list[dict[str, Any]]:
    """The account's companies with their domain, own addresses and member contacts."""
    account = get_account(session, account_name)
    companies = session.scalars(
        select(Company).where(Company.account_id == account.id).order_by(Company.id)
    ).all()
    emails: dict[int, list[str]] = defaultdict(list)
    for company_id, email in session.execute(
        select(CompanyEmail.company_id, CompanyEmail.email)
        .where(CompanyEmail.account_id == account.id)
        .order_by(CompanyEmail.id)
    ):
        emails[company_id].append(email)
    members: dict[int, set[int]] = defaultdict(set)
    for contact_id, member_of in session.execute(
        select(Contact.id, Contact.company_id).where(Contact.account_id == account.id)
    ):
        if member_of is not None:
            members[member_of].add(contact_id)
    primary = _primary_emails(session, {c for ids in members.values() for c in ids})
    return [
        company_json(
            c,
            emails=emails.get(c.id, []),
            contacts=sorted(primary[i] for i in members.get(c.id, set()) if i in primary),
        )
        for c in companies
    ]


def preferences(session: Session, account_name: str) -> dict[str, bool]:
    """The account's preferences by their CLI names."""
    account = get_account(session, account_name)
    return {
        "file-under-companies": account.file_under_companies,
        "discard-automated": account.discard_automated,
    }


def update_preference(session: Session, account_name: str, name: str, value: str) -> bool:
    """Set a preference from its CLI spelling (`on`/`off`); the value now in force."""
    flag = {"on": True, "off": False}.get(value.strip().lower())
    if flag is None:
        raise StoreError(f"{value!r} is not on or off")
    if name not in PREFERENCES:
        raise StoreError(f"unknown preference {name!r} (one of: {', '.join(PREFERENCES)})")
    set_preference(session, account_name, name, flag)
    session.flush()
    return flag
