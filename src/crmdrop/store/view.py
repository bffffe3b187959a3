"""AccountView over the database: the read-only questions `decide` asks (DESIGN step 4).

One instance serves the deliveries of one account in one read snapshot (a worker's
batch); the small per-account sets (colleagues, exclusions) are loaded once. `prefetch`
answers the batch's duplicate checks, addresses and domains in three queries instead of
several round trips per delivery; whatever it did not load is looked up one indexed query
at a time.
Every statement is built once at import with bind parameters: building a
`select()` per call costs ~200 µs, more than SQLite takes to answer it
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    CompoundSelect,
    Executable,
    Integer,
    String,
    bindparam,
    cast,
    literal,
    null,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from crmdrop.dropbox.plan import ContactMatch, RecordRef
from crmdrop.store.accounts import AccountSettings
from crmdrop.store.listbind import each_of, in_list
from crmdrop.store.models import (
    Account,
    Case,
    Company,
    CompanyEmail,
    Contact,
    ContactEmail,
    Exclusion,
    Note,
    Opportunity,
    User,
    UserAddress,
    note_cases,
    note_contacts,
    note_opportunities,
    table_of,
)

_ACCOUNT: BindParameter[int] = bindparam("account")
# The account's colleague addresses (signup and additional) and exclusions, one query:
# `decide` asks for both for every message with an address.
_USERS, _EXTRAS = User.__table__.c, UserAddress.__table__.c
_SETTINGS = union_all(
    select(literal("colleague").label("kind"), _USERS.email.label("value")).where(
        _USERS.account_id == _ACCOUNT
    ),
    select(literal("colleague"), _EXTRAS.email)
    .select_from(UserAddress.__table__.join(User.__table__, _USERS.id == _EXTRAS.user_id))
    .where(_USERS.account_id == _ACCOUNT),
    select(literal("exclusion"), Exclusion.__table__.c.pattern).where(
        Exclusion.__table__.c.account_id == _ACCOUNT
    ),
)
_CONTACT_BY_EMAIL = (
    select(Contact.id, Contact.name, Contact.company_id)
    .join(ContactEmail, ContactEmail.contact_id == Contact.id)
    .where(ContactEmail.account_id == _ACCOUNT, ContactEmail.email == bindparam("email"))
)
_COMPANY_BY_EMAIL = (
    select(Company.id, Company.name)
    .join(CompanyEmail, CompanyEmail.company_id == Company.id)
    .where(CompanyEmail.account_id == _ACCOUNT, CompanyEmail.email == bindparam("email"))
)
_COMPANY_BY_DOMAIN = (
    select(Company.id)
    .where(Company.account_id == _ACCOUNT, Company.domain == bindparam("domain"))
    .limit(2)
)
_COMPANY_OF = select(Contact.company_id).where(Contact.id == bindparam("contact"))
_CASE_BY_REF = select(Case.id, Case.account_id).where(
    Case.account_id == _ACCOUNT, Case.ref_no == bindparam("number")
)
_OPP_BY_REF = select(Opportunity.id, Opportunity.account_id).where(
    Opportunity.account_id == _ACCOUNT, Opportunity.ref_no == bindparam("number")
)
_THREAD_NOTES = select(Note.id).where(
    Note.account_id == _ACCOUNT, in_list(Note.message_key, "keys")
)
# Scoped by account on both sides of each join: a link to another account's record
# (which no code of ours writes) must never be followed (SPEC §1.1).
_THREAD_CASES = (
    select(Case.id, Case.ref_no, Case.account_id)
    .join(note_cases, note_cases.c.case_id == Case.id)
    .where(in_list(note_cases.c.note_id, "notes"), Case.account_id == _ACCOUNT)
)
_THREAD_OPPS = (
    select(Opportunity.id, Opportunity.ref_no, Opportunity.account_id)
    .join(note_opportunities, note_opportunities.c.opportunity_id == Opportunity.id)
    .where(in_list(note_opportunities.c.note_id, "notes"), Opportunity.account_id == _ACCOUNT)
)
_THREAD_CONTACTS = (
    select(Contact.id, Contact.name, Contact.company_id)
    .join(note_contacts, note_contacts.c.contact_id == Contact.id)
    .where(in_list(note_contacts.c.note_id, "notes"), Contact.account_id == _ACCOUNT)
    .distinct()
)
_FILED_NOTE = select(Note.id).where(
    Note.account_id == _ACCOUNT, Note.message_key == bindparam("key")
)
_FILED_NOTES = select(Note.id, Note.message_key).where(
    Note.account_id == _ACCOUNT, in_list(Note.message_key, "keys")
)
# The four questions of a batch's decision in one statement (one round trip instead of
# four), rows tagged by kind: (kind, key, id, name, company_id).
_NO_TEXT, _NO_ID = cast(null(), String), cast(null(), Integer)
_PREFETCH: CompoundSelect[Any] = union_all(
    select(literal("note"), Note.message_key, Note.id, _NO_TEXT, _NO_ID).where(
        Note.account_id == _ACCOUNT, in_list(Note.message_key, "keys")
    ),
    select(literal("company"), CompanyEmail.email, Company.id, Company.name, _NO_ID)
    .join(CompanyEmail, CompanyEmail.company_id == Company.id)
    .where(CompanyEmail.account_id == _ACCOUNT, in_list(CompanyEmail.email, "emails")),
    select(literal("contact"), ContactEmail.email, Contact.id, Contact.name, Contact.company_id)
    .join(ContactEmail, ContactEmail.contact_id == Contact.id)
    .where(ContactEmail.account_id == _ACCOUNT, in_list(ContactEmail.email, "emails")),
    select(literal("domain"), Company.domain, Company.id, _NO_TEXT, _NO_ID).where(
        Company.account_id == _ACCOUNT, in_list(Company.domain, "domains")
    ),
)
# PostgreSQL: the same questions, each value of a list looked up on its own (`each_of`),
# so that the plan is an index look-up on (account_id, value) whatever the statistics say.
# With `value = ANY(:list)`, the generic plan of statistics gathered while a table was
# almost empty read all the account's rows on the index's first column, the list a
# filter: 19-24 ms a batch over a 6,000-message drain for the notes alone. A note is a
# subquery per key (one in the select list is never made a join; a key with no note
# gives a NULL id), the others a LATERAL subquery per value whose LIMIT keeps it one.
_EACH_KEY = each_of("keys", table_of(Note).c.message_key.type, "k")
_EACH_EMAIL = each_of("emails", table_of(ContactEmail).c.email.type, "e")
_EACH_DOMAIN = each_of("domains", table_of(Company).c.domain.type, "d")
_NOTE_OF_KEY = (
    select(Note.id)
    .where(Note.account_id == _ACCOUNT, Note.message_key == _EACH_KEY.c.value)
    .scalar_subquery()
)
_COMPANY_OF_EMAIL = (
    select(Company.id, Company.name)
    .join(CompanyEmail, CompanyEmail.company_id == Company.id)
    .where(CompanyEmail.account_id == _ACCOUNT, CompanyEmail.email == _EACH_EMAIL.c.value)
    .limit(1)
    .lateral("company_of")
)
_CONTACT_OF_EMAIL = (
    select(Contact.id, Contact.name, Contact.company_id)
    .join(ContactEmail, ContactEmail.contact_id == Contact.id)
    .where(ContactEmail.account_id == _ACCOUNT, ContactEmail.email == _EACH_EMAIL.c.value)
    .limit(1)
    .lateral("contact_of")
)
_COMPANIES_OF_DOMAIN = (  # two are enough to say that no one company has the domain
    select(Company.id)
    .where(Company.account_id == _ACCOUNT, Company.domain == _EACH_DOMAIN.c.value)
    .limit(2)
    .lateral("companies_of")
)
_CO, _CT, _DOM = _COMPANY_OF_EMAIL.c, _CONTACT_OF_EMAIL.c, _COMPANIES_OF_DOMAIN.c
_PREFETCH_EACH: CompoundSelect[Any] = union_all(
    select(literal("note"), _EACH_KEY.c.value, _NOTE_OF_KEY, _NO_TEXT, _NO_ID),
    select(literal("company"), _EACH_EMAIL.c.value, _CO.id, _CO.name, _NO_ID).select_from(
        _EACH_EMAIL.join(_COMPANY_OF_EMAIL, true())
    ),
    select(literal("contact"), _EACH_EMAIL.c.value, _CT.id, _CT.name, _CT.company_id).select_from(
        _EACH_EMAIL.join(_CONTACT_OF_EMAIL, true())
    ),
    select(literal("domain"), _EACH_DOMAIN.c.value, _DOM.id, _NO_TEXT, _NO_ID).select_from(
        _EACH_DOMAIN.join(_COMPANIES_OF_DOMAIN, true())
    ),
)
_FILED_NOTES_EACH = select(_NOTE_OF_KEY.label("id"), _EACH_KEY.c.value.label("message_key"))
_THREAD_NOTES_EACH = select(_NOTE_OF_KEY.label("id")).select_from(_EACH_KEY)


class SqlAccountView:
    """AccountView (crmdrop.dropbox.plan) for one account, inside one session."""

    def __init__(self, session: Session, account: Account | AccountSettings) -> None:
        self.session = session
        self.account_id = account.id
        self.file_under_companies = account.file_under_companies
        self.discard_automated = account.discard_automated
        # PostgreSQL: each value of a list looked up on its own (`each_of`); SQLite: `IN`.
        each = session.get_bind().dialect.name == "postgresql"
        self._notes_of_keys = _FILED_NOTES_EACH if each else _FILED_NOTES
        self._thread_notes_of = _THREAD_NOTES_EACH if each else _THREAD_NOTES
        self._prefetch = _PREFETCH_EACH if each else _PREFETCH
        self._colleagues: frozenset[str] | None = None
        self._exclusions: frozenset[str] | None = None
        # What `prefetch` loaded, absent ones as None: valid for this snapshot only.
        self._filed: dict[str, int | None] = {}
        self._found: dict[str, ContactMatch | None] = {}
        self._domains: dict[str, int | None] = {}

    def prefetch(self, message_keys: Iterable[str], addresses: Iterable[str]) -> None:
        """Load the notes filed for these messages, the contacts or companies of these
        (normalized) addresses and the companies of their domains, in one query."""
        keys = sorted(set(message_keys) - self._filed.keys())
        emails = sorted(set(addresses) - self._found.keys())
        self._filed.update(dict.fromkeys(keys))
        if not emails:  # the applying transaction's late-duplicate check
            if keys:
                found = self._rows(self._notes_of_keys, keys=keys)
                self._filed.update((r.message_key, r.id) for r in found)
            return
        self._found.update(dict.fromkeys(emails))
        domains = sorted({e.rpartition("@")[2] for e in emails} - self._domains.keys())
        by_domain: dict[str, list[int]] = {d: [] for d in domains}
        rows = self._rows(self._prefetch, keys=keys, emails=emails, domains=domains)
        for kind, key, row_id, name, company_id in rows:
            if kind == "note":
                self._filed[key] = row_id
            elif kind == "company" and self._found[key] is None:  # a contact beats a company
                self._found[key] = ContactMatch("company", row_id, name, row_id)
            elif kind == "contact":
                self._found[key] = ContactMatch("contact", row_id, name, company_id)
            elif kind == "domain":
                by_domain[key].append(row_id)
        self._domains.update((d, ids[0] if len(ids) == 1 else None) for d, ids in by_domain.items())

    def _rows(self, statement: Executable, **params: object) -> Sequence[Any]:
        """Rows of columns, through the session's connection: no ORM execution path (and
        no autoflush: nothing this reads is written through the unit of work)."""
        params["account"] = self.account_id
        return self.session.connection().execute(statement, params).all()

    def _settings(self) -> tuple[frozenset[str], frozenset[str]]:
        if self._colleagues is None or self._exclusions is None:
            found: dict[str, set[str]] = {"colleague": set(), "exclusion": set()}
            for row in self._rows(_SETTINGS):
                found[row.kind].add(row.value)
            self._colleagues = frozenset(found["colleague"])
            self._exclusions = frozenset(found["exclusion"])
        return self._colleagues, self._exclusions

    def colleague_addresses(self) -> frozenset[str]:
        return self._settings()[0]

    def is_excluded(self, address: str) -> str | None:
        exclusions = self._settings()[1]
        if address in exclusions:
            return address
        domain = "@" + address.rpartition("@")[2]
        return domain if domain in exclusions else None

    def find(self, address: str) -> ContactMatch | None:
        if address in self._found:
            return self._found[address]
        rows = self._rows(_CONTACT_BY_EMAIL, email=address)
        if rows:
            row = rows[0]
            return ContactMatch(kind="contact", id=row.id, name=row.name, company_id=row.company_id)
        crows = self._rows(_COMPANY_BY_EMAIL, email=address)
        if crows:
            return ContactMatch(
                kind="company", id=crows[0].id, name=crows[0].name, company_id=crows[0].id
            )
        return None

    def company_for_domain(self, domain: str) -> int | None:
        if domain in self._domains:
            return self._domains[domain]
        ids = self._rows(_COMPANY_BY_DOMAIN, domain=domain)
        return ids[0].id if len(ids) == 1 else None

    def company_of(self, contact_id: int) -> int | None:
        rows = self._rows(_COMPANY_OF, contact=contact_id)
        return rows[0].company_id if rows else None

    def find_record(self, kind: str, number: int) -> RecordRef | None:
        rows = self._rows(_CASE_BY_REF if kind == "case" else _OPP_BY_REF, number=number)
        if not rows:
            return None
        row = rows[0]
        prefix = "CA" if kind == "case" else "CO"
        return RecordRef(kind=kind, id=row.id, ref=f"{prefix}{number}", account_id=row.account_id)

    def _thread_notes(self, message_ids: list[str]) -> list[int]:
        if not message_ids:
            return []
        rows = self._rows(self._thread_notes_of, keys=message_ids)
        return [r.id for r in rows if r.id is not None]

    def thread_records(self, message_ids: list[str]) -> list[RecordRef]:
        note_ids = self._thread_notes(message_ids)
        if not note_ids:
            return []
        refs: dict[tuple[str, int], RecordRef] = {}
        for c in self._rows(_THREAD_CASES, notes=note_ids):
            refs[("case", c.id)] = RecordRef("case", c.id, f"CA{c.ref_no}", c.account_id)
        for o in self._rows(_THREAD_OPPS, notes=note_ids):
            refs[("opportunity", o.id)] = RecordRef(
                "opportunity", o.id, f"CO{o.ref_no}", o.account_id
            )
        return list(refs.values())

    def thread_contacts(self, message_ids: list[str]) -> list[ContactMatch]:
        note_ids = self._thread_notes(message_ids)
        if not note_ids:
            return []
        rows = self._rows(_THREAD_CONTACTS, notes=note_ids)
        return [ContactMatch("contact", r.id, r.name, r.company_id) for r in rows]

    def note_filed(self, message_key: str, note_id: int) -> None:
        """This transaction filed (or found) the note of `message_key`."""
        self._filed[message_key] = note_id

    def filed_note(self, message_key: str) -> int | None:
        if message_key in self._filed:
            return self._filed[message_key]
        rows = self._rows(_FILED_NOTE, key=message_key)
        return rows[0].id if rows else None
