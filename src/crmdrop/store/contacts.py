"""Contacts as a user works with them: the list, one contact's page, edit, delete, merge.

Every function takes the caller's account id; a contact of another account is
`NotFound` (the pages answer 404). The web pages, the API and the CLI call these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, delete, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from crmdrop.mail.addresses import is_plausible_address, normalize_address
from crmdrop.store.accounts import StoreError
from crmdrop.store.models import (
    Company,
    CompanyEmail,
    Contact,
    ContactEmail,
    case_contacts,
    contact_terms,
    note_contacts,
    opportunity_contacts,
    task_contacts,
)
from crmdrop.store.scope import NotFound, decode_cursor, encode_cursor, owned
from crmdrop.store.search import CANDIDATES, candidates, matching, reindex_contact
from crmdrop.store.timeline import Ref, Timeline, read_timeline
from crmdrop.store.webhooks import Event, emit

LIST_PAGE = 50

# The link tables that name a contact, with the column of the other side.
LINKS: tuple[tuple[Table, str], ...] = (
    (note_contacts, "note_id"),
    (case_contacts, "case_id"),
    (opportunity_contacts, "opportunity_id"),
    (task_contacts, "task_id"),
)


@dataclass(frozen=True)
class ContactRow:
    """A contact as the list shows it."""

    id: int
    name: str
    email: str | None  # the first address
    company: Ref | None
    last_activity_at: datetime


@dataclass(frozen=True)
class ContactPage:
    rows: list[ContactRow]
    next_cursor: str | None  # pass back as `after` for the next page


@dataclass(frozen=True)
class ContactDetail:
    """One contact's page: who they are and their timeline (newest first)."""

    id: int
    name: str
    emails: list[str]
    company: Ref | None
    created_by_delivery_id: int | None  # the delivery whose filing created it
    timeline: Timeline


@dataclass(frozen=True)
class ContactEdit:
    """What the edit form sends: the whole new state of the editable fields."""

    name: str
    emails: list[str]
    company_id: int | None


def _search(session: Session, account_id: int, text: str) -> tuple[ColumnElement[bool], bool]:
    """Every word begins a word of the name, an address or its domain (the search
    index, crmdrop.store.search), or the company's name contains the text.

    Also whether the matches are few: then they are read by id and sorted, instead of
    walking the whole list in activity order to find them."""
    companies = list(
        session.scalars(
            select(Company.id).where(
                Company.account_id == account_id,
                func.lower(Company.name).contains(text.strip().lower(), autoescape=True),
            )
        )
    )
    condition = or_(matching(text), Contact.company_id.in_(companies))
    few = candidates(session, account_id, text)
    if few is None:
        return condition, False
    members: list[int] = []
    if companies:
        members = list(
            session.scalars(
                select(Contact.id).where(Contact.company_id.in_(companies)).limit(CANDIDATES)
            )
        )
    if len(few) + len(members) >= CANDIDATES:
        return condition, False
    return and_(Contact.id.in_(few + members), condition), True


def list_contacts(
    session: Session, account_id: int, *, search: str = "", after: str | None = None
) -> ContactPage:
    """The account's contacts, most recent activity first, a page at a time (keyset),
    optionally only those whose name, address or company contains `search`."""
    query = select(Contact.id, Contact.name, Contact.company_id, Contact.last_activity_at)
    few = False
    if search.strip():
        condition, few = _search(session, account_id, search)
        query = query.where(condition)
    # `+ 0` keeps SQLite from walking the account's whole list in order for a few matches.
    query = query.where((Contact.account_id + 0 if few else Contact.account_id) == account_id)
    if after:
        when, last = decode_cursor(after)
        query = query.where(tuple_(Contact.last_activity_at, Contact.id) < tuple_(when, last))
    rows = session.execute(
        query.order_by(Contact.last_activity_at.desc(), Contact.id.desc()).limit(LIST_PAGE + 1)
    ).all()
    more = len(rows) > LIST_PAGE
    rows = rows[:LIST_PAGE]
    emails = first_emails(session, [r.id for r in rows])
    companies = _company_refs(session, {r.company_id for r in rows if r.company_id})
    out = [
        ContactRow(r.id, r.name, emails.get(r.id), companies.get(r.company_id), r.last_activity_at)
        for r in rows
    ]
    cursor = encode_cursor(out[-1].last_activity_at, out[-1].id) if more else None
    return ContactPage(out, cursor)


def first_emails(session: Session, contact_ids: list[int]) -> dict[int, str]:
    """Each contact's first address, by contact id."""
    out: dict[int, str] = {}
    if contact_ids:
        for contact_id, email in session.execute(
            select(ContactEmail.contact_id, ContactEmail.email)
            .where(ContactEmail.contact_id.in_(contact_ids))
            .order_by(ContactEmail.id)
        ):
            out.setdefault(contact_id, email)
    return out


def _company_refs(session: Session, ids: set[int | None]) -> dict[int | None, Ref]:
    if not ids:
        return {}
    rows = session.execute(select(Company.id, Company.name).where(Company.id.in_(ids)))
    return {i: Ref(i, name) for i, name in rows}


def _emails(session: Session, contact_id: int) -> list[str]:
    return list(
        session.scalars(
            select(ContactEmail.email)
            .where(ContactEmail.contact_id == contact_id)
            .order_by(ContactEmail.id)
        )
    )


def get_contact(
    session: Session, account_id: int, contact_id: int, *, after: str | None = None
) -> ContactDetail:
    """A contact with its addresses, company and a page of its timeline (newest first)."""
    contact = owned(session, Contact, contact_id, account_id, "contact")
    company = _company_refs(session, {contact.company_id}).get(contact.company_id)
    query = select(note_contacts.c.note_id).where(note_contacts.c.contact_id == contact.id)
    return ContactDetail(
        id=contact.id,
        name=contact.name,
        emails=_emails(session, contact.id),
        company=company,
        created_by_delivery_id=contact.created_by_delivery_id,
        timeline=read_timeline(session, query, note_contacts.c.note_id, after),
    )


def _clean_emails(
    session: Session, account_id: int, contact_id: int, emails: list[str]
) -> list[str]:
    """Valid, distinct, normalized addresses that no other contact or company has."""
    out: list[str] = []
    for raw in emails:
        if not raw.strip():
            continue
        address = normalize_address(raw)
        if not is_plausible_address(address):
            raise StoreError(f"{raw.strip()!r} is not a valid email address")
        other = session.scalar(
            select(ContactEmail.contact_id).where(
                ContactEmail.account_id == account_id, ContactEmail.email == address
            )
        )
        if other is not None and other != contact_id:
            raise StoreError(f"{address} belongs to another contact (merge them instead)")
        if session.scalar(
            select(CompanyEmail.id).where(
                CompanyEmail.account_id == account_id, CompanyEmail.email == address
            )
        ):
            raise StoreError(f"{address} is a company's address")
        if address not in out:
            out.append(address)
    return out


def update_contact(
    session: Session, account_id: int, contact_id: int, edit: ContactEdit
) -> ContactRow:
    """Rename a contact, set its addresses and its company; nothing changes on bad input."""
    contact = owned(session, Contact, contact_id, account_id, "contact")
    name = edit.name.strip()
    if not name:
        raise StoreError("a contact needs a name")
    emails = _clean_emails(session, account_id, contact.id, edit.emails)
    if edit.company_id is not None:
        owned(session, Company, edit.company_id, account_id, "company")
    contact.name = name
    contact.company_id = edit.company_id
    have = _emails(session, contact.id)
    session.execute(
        delete(ContactEmail).where(
            ContactEmail.contact_id == contact.id, ContactEmail.email.not_in(emails or [""])
        )
    )
    for address in emails:
        if address not in have:
            session.add(ContactEmail(account_id=account_id, contact_id=contact.id, email=address))
    session.flush()
    reindex_contact(session, contact.id)
    company = _company_refs(session, {contact.company_id}).get(contact.company_id)
    return ContactRow(
        contact.id, contact.name, emails[0] if emails else None, company, contact.last_activity_at
    )


def create_contact(
    session: Session, account_id: int, edit: ContactEdit, *, now: datetime
) -> ContactRow:
    """A contact made by hand (the API); queues `contact.created` like a filing does."""
    name = edit.name.strip()
    if not name:
        raise StoreError("a contact needs a name")
    emails = _clean_emails(session, account_id, 0, edit.emails)  # 0: no contact's id
    company = None
    if edit.company_id is not None:
        owned(session, Company, edit.company_id, account_id, "company")
        company = _company_refs(session, {edit.company_id}).get(edit.company_id)
    contact = Contact(
        account_id=account_id,
        name=name,
        company_id=edit.company_id,
        created_at=now,
        last_activity_at=now,
    )
    session.add(contact)
    session.flush()
    for address in emails:
        session.add(ContactEmail(account_id=account_id, contact_id=contact.id, email=address))
    session.flush()
    reindex_contact(session, contact.id)
    first = emails[0] if emails else None
    data = {"id": contact.id, "name": name, "email": first}
    emit(
        session, account_id, Event.CONTACT_CREATED, {**data, "company_id": edit.company_id}, now=now
    )
    return ContactRow(contact.id, name, first, company, now)


def remove_contact_rows(session: Session, contact_ids: list[int]) -> None:
    """Delete contacts, their addresses and every link to them (notes stay)."""
    if not contact_ids:
        return
    for table, _ in LINKS:
        session.execute(delete(table).where(table.c.contact_id.in_(contact_ids)))
    session.execute(delete(ContactEmail).where(ContactEmail.contact_id.in_(contact_ids)))
    session.execute(delete(contact_terms).where(contact_terms.c.contact_id.in_(contact_ids)))
    session.execute(delete(Contact).where(Contact.id.in_(contact_ids)))


def delete_contact(session: Session, account_id: int, contact_id: int) -> None:
    """Delete a contact. Its notes stay (on their other contacts, cases, the activity)."""
    owned(session, Contact, contact_id, account_id, "contact")
    remove_contact_rows(session, [contact_id])


def _move_links(session: Session, source: int, target: int) -> None:
    """Re-point every link from `source` to `target`, without making a pair twice."""
    for table, other in LINKS:
        taken = select(table.c[other]).where(table.c.contact_id == target)
        session.execute(
            update(table)
            .where(table.c.contact_id == source, table.c[other].not_in(taken))
            .values(contact_id=target)
        )
        session.execute(delete(table).where(table.c.contact_id == source))


def merge_contacts(session: Session, account_id: int, keep_id: int, merge_id: int) -> ContactRow:
    """Merge contact `merge_id` into `keep_id`: the kept one gains every note, record link
    and address of the other, which is then gone. The kept name wins; a missing company
    is taken from the other."""
    if keep_id == merge_id:
        raise StoreError("a contact cannot be merged with itself: choose another contact")
    keep = owned(session, Contact, keep_id, account_id, "contact")
    other = owned(session, Contact, merge_id, account_id, "contact")
    _move_links(session, other.id, keep.id)
    session.execute(
        update(ContactEmail).where(ContactEmail.contact_id == other.id).values(contact_id=keep.id)
    )
    if keep.company_id is None:
        keep.company_id = other.company_id
    keep.last_activity_at = max(keep.last_activity_at, other.last_activity_at)
    remove_contact_rows(session, [other.id])
    session.flush()
    reindex_contact(session, keep.id)
    company = _company_refs(session, {keep.company_id}).get(keep.company_id)
    emails = _emails(session, keep.id)
    return ContactRow(
        keep.id, keep.name, emails[0] if emails else None, company, keep.last_activity_at
    )


__all__ = [
    "ContactDetail",
    "ContactEdit",
    "ContactPage",
    "ContactRow",
    "NotFound",
    "create_contact",
    "delete_contact",
    "get_contact",
    "list_contacts",
    "merge_contacts",
    "update_contact",
]


def contact_by_address(session: Session, account_id: int, address: str) -> int:
    """The id of the account's contact with this address (how a person names the contact
    to merge in: by the address they know, not an id)."""
    found = session.scalar(
        select(ContactEmail.contact_id).where(
            ContactEmail.account_id == account_id,
            ContactEmail.email == normalize_address(address),
        )
    )
    if found is None:
        raise StoreError(f"no contact has the address {address.strip()!r}")
    return int(found)
