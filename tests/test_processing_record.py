"""The processing record of a filing keeps the note's texts once, in the note, and still
shows the whole decision (`deliveries show`), before and after the filing is undone —
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from crmdrop.config import Settings
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.filing import preview
from crmdrop.mail.parse import parse_message
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.activity import undo_filing
from crmdrop.store.db import Database
from crmdrop.store.deliveries import show_delivery
from crmdrop.store.models import Delivery
from crmdrop.worker import Progress, file_next, worker_started
from tests.support import make_message

FORWARD = """Please file this, thanks.

---------- Forwarded message ---------
From: Jane Buyer <jane@client.example>
Date: Mon, 2 Mar 2026 at 10:00
Subject: Pump order
To: Olivia <olivia@mycorp.example>

We would like to order three pumps.
"""


@pytest.fixture
def migrated(store: tuple[Database, Settings]) -> tuple[Database, Settings]:
    """conftest's database of the test's own, on both backends, migrated."""
    store[0].migrate()
    return store


def _file_forward(db: Database, settings: Settings) -> tuple[int, dict[str, Any], int, str]:
    """File one forward; (its delivery id, the note of the plan decided for it, the
    owner's user and account ids)."""
    with db.writing() as session:
        user = accounts.add_user(session, "olivia@mycorp.example", name="O", account="acme")
        user_id, token = user.id, user.token
    raw = make_message(
        from_="olivia@mycorp.example",
        to=[f"dropbox-{token}@dropbox.test"],
        subject="Fwd: Pump order",
        body=FORWARD,
    ).as_bytes()
    receiver = Receiver(db, settings)
    reply, rcpt = receiver.check_recipient(f"dropbox-{token}@dropbox.test")
    assert rcpt is not None, reply
    receiver.accept(
        mail_from="olivia@mycorp.example", rcpts=[rcpt], raw=raw, protocol="smtp", peer="t"
    )
    with db.reading() as session:  # the decision as `explain` shows it, whole
        shown = preview(
            session,
            parse_message(raw),
            token=token,
            kind=DropboxKind.NOTE,
            mail_from="olivia@mycorp.example",
            settings=settings,
            now=datetime.now(UTC),
        )
    assert shown.decision.plan is not None
    draft = shown.decision.plan.to_json()["note"]
    worker_started(db)
    while file_next(db, settings) is not Progress.IDLE:
        pass
    with db.reading() as session:
        delivery_id = session.scalars(sa.select(Delivery.id)).one()
    return delivery_id, draft, user_id, token


def _stored_note(db: Database, delivery_id: int) -> dict[str, Any]:
    with db.reading() as session:
        plan = session.get(Delivery, delivery_id).plan  # type: ignore[union-attr]
    assert plan is not None
    note: dict[str, Any] = plan["note"]
    return note


def test_the_record_leaves_the_notes_texts_to_the_note_and_shows_them_whole(
    migrated: tuple[Database, Settings],
) -> None:
    db, settings = migrated
    delivery_id, draft, _, _ = _file_forward(db, settings)
    assert draft["own_text"] == "Please file this, thanks."
    assert "three pumps" in draft["body"] and draft["chain"]
    stored = _stored_note(db, delivery_id)
    assert not {"body", "own_text", "chain"} & stored.keys()
    assert stored["subject"] == draft["subject"]
    with db.reading() as session:
        shown = show_delivery(session, delivery_id)
    assert shown["status"] == "filed"
    assert shown["plan"]["note"] == draft
    assert list(shown["plan"]["note"]) == list(draft)  # the draft's field order


def test_an_undone_filing_keeps_the_notes_texts_in_its_record(
    migrated: tuple[Database, Settings],
) -> None:
    db, settings = migrated
    delivery_id, draft, user_id, _ = _file_forward(db, settings)
    with db.writing() as session:
        account_id = session.get(Delivery, delivery_id).account_id  # type: ignore[union-attr]
        result = undo_filing(session, account_id, user_id, delivery_id, now=datetime.now(UTC))
    assert any(r.startswith("note #") for r in result.removed)
    assert _stored_note(db, delivery_id) == draft
    with db.reading() as session:
        shown = show_delivery(session, delivery_id)
    assert shown["status"] == "undone" and shown["plan"]["note"] == draft
