"""`SqlAccountView.prefetch` answers a batch's questions in one query with the answers
the one-at-a-time look-ups give (a contact beats a company on the same address; a domain
names a company only when exactly one has it), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from crmdrop.config import Settings
from crmdrop.dropbox.address import dropbox_addresses
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Company, CompanyEmail, Contact, ContactEmail, Note
from crmdrop.store.view import SqlAccountView
from crmdrop.worker import process_one
from tests.support import make_message

ADDRESSES = ["shared@x.example", "nobody@x.example", "a@dup.example", "c@solo.example"]


def _filed_note(db: Database, settings: Settings) -> tuple[int, str, int]:
    """(account id, message key, note id) of a note filed the worker's way."""
    with db.writing() as session:
        user = accounts.add_user(session, "o@acme.example", name="O", account="acme")
        box = dropbox_addresses(user.token, "dropbox.test")[DropboxKind.NOTE]
        account_id = user.account_id
    receiver = Receiver(db, settings)
    _, rcpt = receiver.check_recipient(box)
    assert rcpt is not None
    raw = make_message(from_="o@acme.example", to=["client@client.example"]).as_bytes()
    verdict = receiver.accept(
        mail_from="o@acme.example", rcpts=[rcpt], raw=raw, protocol="smtp", peer="t"
    )
    assert verdict.replies[0].startswith("250")
    while process_one(db, settings):
        pass
    with db.reading() as session:
        note = session.scalars(sa.select(Note).where(Note.account_id == account_id)).one()
        return account_id, note.message_key, note.id


def _company(session: Any, account_id: int, name: str, domain: str, email: str = "") -> int:
    now = datetime.now(UTC)
    company = Company(account_id=account_id, name=name, domain=domain, created_at=now)
    session.add(company)
    session.flush()
    if email:
        session.add(CompanyEmail(account_id=account_id, company_id=company.id, email=email))
    return company.id


def _answers(view: SqlAccountView, key: str) -> list[object]:
    return [
        view.filed_note(key),
        view.filed_note("<never@filed.example>"),
        *(view.find(address) for address in ADDRESSES),
        *(view.company_for_domain(d) for d in ["x.example", "dup.example", "solo.example"]),
    ]


def test_prefetch_gives_the_one_at_a_time_answers_in_one_query(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    db.migrate()
    account_id, key, note_id = _filed_note(db, settings)
    now = datetime.now(UTC)
    with db.writing() as session:
        x = _company(session, account_id, "X", "x.example", email="shared@x.example")
        _company(session, account_id, "Dup 1", "dup.example")
        _company(session, account_id, "Dup 2", "dup.example")
        solo = _company(session, account_id, "Solo", "solo.example", email="c@solo.example")
        contact = Contact(account_id=account_id, name="Sam", created_at=now, last_activity_at=now)
        session.add(contact)
        session.flush()
        session.add(ContactEmail(account_id=account_id, contact_id=contact.id, email=ADDRESSES[0]))
    statements: list[str] = []

    def count(*call: Any) -> None:
        statements.append(call[2])

    with db.reading() as session:
        account = accounts.account_settings(session, account_id)
        assert account is not None
        one_at_a_time = _answers(SqlAccountView(session, account), key)
        prefetched = SqlAccountView(session, account)
        sa.event.listen(session.get_bind(), "before_cursor_execute", count)
        try:
            prefetched.prefetch([key, "<never@filed.example>"], ADDRESSES)
            answers = _answers(prefetched, key)
        finally:
            sa.event.remove(session.get_bind(), "before_cursor_execute", count)
    assert answers == one_at_a_time
    assert len(statements) == 1
    found = {address: match for address, match in zip(ADDRESSES, answers[2:6], strict=True)}
    assert answers[:2] == [note_id, None]
    assert found["shared@x.example"] is not None and found["shared@x.example"].kind == "contact"
    assert found["shared@x.example"].id == contact.id
    assert found["nobody@x.example"] is None
    assert found["c@solo.example"] is not None and found["c@solo.example"].id == solo
    assert answers[6:] == [x, None, solo]
