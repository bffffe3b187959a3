"""AccountView over the database: the read-only questions `decide` asks (DESIGN step 4).

One instance serves one delivery; the small per-account sets (colleagues,
exclusions) are loaded once, contacts are looked up one indexed query at a time.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop.dropbox.plan import ContactMatch, RecordRef
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
)


class SqlAccountView:
    """AccountView (crmdrop.dropbox.plan) for one account, inside one session."""

    def __init__(self, session: Session, account: Account) -> None:
        self.session = session
        self.account_id = account.id
        self.file_under_companies = account.file_under_companies
        self.discard_automated = account.discard_automated
        self._colleagues: frozenset[str] | None = None
        self._exclusions: frozenset[str] | None = None

    def colleague_addresses(self) -> frozenset[str]:
        if self._colleagues is None:
            signup = self.session.scalars(
                select(User.email).where(User.account_id == self.account_id)
            ).all()
            extra = self.session.scalars(
                select(UserAddress.email)
                .join(User, User.id == UserAddress.user_id)
                .where(User.account_id == self.account_id)
            ).all()
            self._colleagues = frozenset([*signup, *extra])
        return self._colleagues

    def is_excluded(self, address: str) -> str | None:
        if self._exclusions is None:
            self._exclusions = frozenset(
                self.session.scalars(
                    select(Exclusion.pattern).where(Exclusion.account_id == self.account_id)
                ).all()
            )
        if address in self._exclusions:
            return address
        domain = "@" + address.rpartition("@")[2]
        return domain if domain in self._exclusions else None

    def find(self, address: str) -> ContactMatch | None:
        row = self.session.execute(
            select(Contact.id, Contact.name, Contact.company_id)
            .join(ContactEmail, ContactEmail.contact_id == Contact.id)
            .where(ContactEmail.account_id == self.account_id, ContactEmail.email == address)
        ).first()
        if row is not None:
            return ContactMatch(kind="contact", id=row.id, name=row.name, company_id=row.company_id)
        crow = self.session.execute(
            select(Company.id, Company.name)
            .join(CompanyEmail, CompanyEmail.company_id == Company.id)
            .where(CompanyEmail.account_id == self.account_id, CompanyEmail.email == address)
        ).first()
        if crow is not None:
            return ContactMatch(kind="company", id=crow.id, name=crow.name, company_id=crow.id)
        return None

    def company_for_domain(self, domain: str) -> int | None:
        ids = self.session.scalars(
            select(Company.id)
            .where(Company.account_id == self.account_id, Company.domain == domain)
            .limit(2)
        ).all()
        return ids[0] if len(ids) == 1 else None

    def company_of(self, contact_id: int) -> int | None:
        return self.session.scalar(select(Contact.company_id).where(Contact.id == contact_id))

    def find_record(self, kind: str, number: int) -> RecordRef | None:
        model: type[Case] | type[Opportunity] = Case if kind == "case" else Opportunity
        prefix = "CA" if kind == "case" else "CO"
        rows = self.session.execute(
            select(model.id, model.account_id).where(model.ref_no == number)
        ).all()
        if not rows:
            return None
        mine = [r for r in rows if r.account_id == self.account_id]
        row = mine[0] if mine else rows[0]
        return RecordRef(kind=kind, id=row.id, ref=f"{prefix}{number}", account_id=row.account_id)

    def _thread_notes(self, message_ids: list[str]) -> list[int]:
        if not message_ids:
            return []
        return list(
            self.session.scalars(
                select(Note.id).where(
                    Note.account_id == self.account_id, Note.message_key.in_(message_ids)
                )
            ).all()
        )

    def thread_records(self, message_ids: list[str]) -> list[RecordRef]:
        note_ids = self._thread_notes(message_ids)
        if not note_ids:
            return []
        refs: dict[tuple[str, int], RecordRef] = {}
        cases = self.session.execute(
            select(Case.id, Case.ref_no)
            .join(note_cases, note_cases.c.case_id == Case.id)
            .where(note_cases.c.note_id.in_(note_ids))
        ).all()
        for c in cases:
            refs[("case", c.id)] = RecordRef("case", c.id, f"CA{c.ref_no}", self.account_id)
        opps = self.session.execute(
            select(Opportunity.id, Opportunity.ref_no)
            .join(note_opportunities, note_opportunities.c.opportunity_id == Opportunity.id)
            .where(note_opportunities.c.note_id.in_(note_ids))
        ).all()
        for o in opps:
            refs[("opportunity", o.id)] = RecordRef(
                "opportunity", o.id, f"CO{o.ref_no}", self.account_id
            )
        return list(refs.values())

    def thread_contacts(self, message_ids: list[str]) -> list[ContactMatch]:
        note_ids = self._thread_notes(message_ids)
        if not note_ids:
            return []
        rows = self.session.execute(
            select(Contact.id, Contact.name, Contact.company_id)
            .join(note_contacts, note_contacts.c.contact_id == Contact.id)
            .where(note_contacts.c.note_id.in_(note_ids))
            .distinct()
        ).all()
        return [ContactMatch("contact", r.id, r.name, r.company_id) for r in rows]

    def filed_note(self, message_key: str) -> int | None:
        return self.session.scalar(
            select(Note.id).where(
                Note.account_id == self.account_id, Note.message_key == message_key
            )
        )
