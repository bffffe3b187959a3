"""Thread joins never leave the account (SPEC §1.1), even when a link across accounts
exists in the database (none of our code writes one: it is put there by hand here)."""

from __future__ import annotations

import sqlalchemy as sa

from crmdrop.config import Settings
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Account, Case, Contact, Note, note_cases, note_contacts
from crmdrop.store.view import SqlAccountView
from crmdrop.worker import process_one
from tests.support import make_message


def _file_case(db: Database, settings: Settings, owner: str, account: str, mid: str) -> None:
    with db.writing() as session:
        user = accounts.add_user(session, owner, name="O", account=account)
        box = f"dropbox-{user.token}-case@dropbox.test"
    receiver = Receiver(db, settings)
    _, rcpt = receiver.check_recipient(box)
    assert rcpt is not None
    msg = make_message(from_=owner, to=[f"client@{account}.example"], message_id=mid)
    verdict = receiver.accept(
        mail_from=owner, rcpts=[rcpt], raw=msg.as_bytes(), protocol="smtp", peer="t"
    )
    assert verdict.replies[0].startswith("250")
    while process_one(db, settings):
        pass


def test_a_thread_lookup_never_follows_a_link_into_another_account(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    db.migrate()
    _file_case(db, settings, "a@acme.example", "acme", "<a1@acme.example>")
    _file_case(db, settings, "b@beta.example", "beta", "<b1@beta.example>")
    with db.writing() as session:
        acme = session.scalars(sa.select(Account).where(Account.name == "acme")).one()
        beta = session.scalars(sa.select(Account).where(Account.name == "beta")).one()
        note = session.scalars(sa.select(Note).where(Note.account_id == acme.id)).one()
        case_b = session.scalars(sa.select(Case).where(Case.account_id == beta.id)).one()
        contact_b = session.scalars(sa.select(Contact).where(Contact.account_id == beta.id)).one()
        session.execute(sa.insert(note_cases).values(note_id=note.id, case_id=case_b.id))
        session.execute(sa.insert(note_contacts).values(note_id=note.id, contact_id=contact_b.id))
    with db.reading() as session:
        acme = session.scalars(sa.select(Account).where(Account.name == "acme")).one()
        view = SqlAccountView(session, acme)
        records = view.thread_records([note.message_key])
        contacts = view.thread_contacts([note.message_key])
    assert [r.account_id for r in records] == [acme.id]
    assert case_b.id not in [r.id for r in records]
    assert contact_b.id not in [c.id for c in contacts]
