"""The outcome of a batch's filings, written in one statement on PostgreSQL
(`store.inbound.finish_deliveries`: each column bound as the text of an array) and by
one executemany on SQLite: each delivery gets its own outcome, and nothing else in the
queue changes — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import crmdrop.worker
from crmdrop.config import Settings, load_settings
from crmdrop.dropbox.decide import message_key
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.inbound import ClaimedDelivery, finish_deliveries, lock_queued
from crmdrop.store.models import Delivery
from crmdrop.worker import Progress, file_next
from tests.support import make_message

# Text the array's quoting must carry through: quotes, backslashes, commas, braces,
# spaces, the word NULL, an empty string, non-ASCII; a NUL is dropped (`CleanString`).
AWKWARD = ['a"b', "c\\d", "x,y", "{z}", " sp ", "NULL", "", "üñí ✓", "it's", "n\x00ul"]


def _settings(db: Database) -> Settings:
    return load_settings(domain="dropbox.test", database_url=db.url, retry_base_seconds=0)


def _queue(db: Database, settings: Settings, box: str, raw: bytes) -> None:
    receiver = Receiver(db, settings)
    _, rcpt = receiver.check_recipient(box)
    assert rcpt is not None
    verdict = receiver.accept(mail_from="", rcpts=[rcpt], raw=raw, protocol="smtp", peer="t")
    assert verdict.replies[0].startswith("250"), verdict.replies


def _deliveries(db: Database) -> list[Delivery]:
    with db.reading() as session:
        return list(session.scalars(sa.select(Delivery).order_by(Delivery.id)))


def _five_claimed(db: Database, settings: Settings) -> list[int]:
    """Five queued deliveries, claimed (claimed_at set, an error from an earlier attempt
    recorded); the fourth has the plan and note of an earlier filing. Their ids."""
    user, box = _owner(db)
    for n in range(5):
        raw = make_message(from_=user, to=[f"c{n}@client.example"], subject=f"s{n}")
        _queue(db, settings, box, raw.as_bytes())
    now = datetime.now(UTC)
    with db.writing() as session:
        session.execute(sa.update(Delivery).values(claimed_at=now, last_error="before"))
        ids = list(session.scalars(sa.select(Delivery.id).order_by(Delivery.id)))
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id == ids[3])
            .values(plan={"earlier": True}, note_id=77)
        )
    return ids


def _owner(db: Database) -> tuple[str, str]:
    """A user's address and their dropbox."""
    with db.writing() as session:
        user = accounts.add_user(session, "olive@mycorp.example", name="O", account="acme")
        return user.email, f"dropbox-{user.token}@dropbox.test"


def test_a_batch_finish_writes_each_delivery_its_own_outcome_and_no_other_row(
    store: tuple[Database, Settings],
) -> None:
    """Filed (a note), duplicate (no note of its own), two refusals (no plan: the
    fourth keeps the plan and note of its earlier filing) in one batch; the fifth,
    whose filing failed, is not in the batch and stays claimed as it was."""
    db, _ = store
    db.migrate()
    settings = _settings(db)
    ids = _five_claimed(db, settings)
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    plans: list[dict[str, Any] | None] = [
        {"outcome": "filed", "texts": AWKWARD, "n": 1, "nested": {"k": [None, True, 2.5]}},
        {"outcome": "duplicate", "reason": 'the "same" \\ message', "empty": {}},
        None,
        None,
    ]
    outcomes = [("filed", 41), ("duplicate", None), ("rejected", None), ("rejected", None)]
    with db.writing() as session:
        locked = lock_queued(session, ids[:4])
        batch: list[ClaimedDelivery] = []
        for n, (delivery_id, (status, note_id), plan) in enumerate(
            zip(ids[:4], outcomes, plans, strict=True)
        ):
            delivery = locked[delivery_id]
            delivery.status, delivery.note_id, delivery.plan = status, note_id, plan
            delivery.reason = f"reason {n}: " + " | ".join(AWKWARD)
            batch.append(delivery)
        finish_deliveries(session, batch, now)
    rows = _deliveries(db)
    assert [r.status for r in rows] == ["filed", "duplicate", "rejected", "rejected", "queued"]
    clean_reason = " | ".join(AWKWARD).replace("\x00", "")
    assert [r.reason for r in rows[:4]] == [f"reason {n}: {clean_reason}" for n in range(4)]
    assert [r.note_id for r in rows] == [41, None, None, 77, None]
    clean_texts = [t.replace("\x00", "") for t in AWKWARD]
    assert rows[0].plan == {**(plans[0] or {}), "texts": clean_texts}
    assert rows[1].plan == plans[1]
    assert [r.plan for r in rows[2:]] == [None, {"earlier": True}, None]
    assert all(r.finished_at == now for r in rows[:4])
    assert all(r.claimed_at is None and r.last_error is None for r in rows[:4])
    untouched = rows[4]
    assert untouched.finished_at is None and untouched.claimed_at is not None
    assert untouched.last_error == "before" and untouched.reason == ""


def test_a_batch_with_a_filing_a_duplicate_and_a_failure_records_each_its_own(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's one batch: a new message filed, one filed before now a duplicate,
    one whose parse fails retried — each delivery's record is its own message's."""
    db, _ = store
    db.migrate()
    settings = _settings(db)
    user, box = _owner(db)
    first = make_message(from_=user, to=["a@client.example"], subject="first")
    _queue(db, settings, box, first.as_bytes())
    assert file_next(db, settings) is Progress.DRAINED
    again = make_message(from_=user, to=["b@client.example"], subject="new")
    broken = make_message(from_=user, to=["c@client.example"], subject="breaks the parser")
    for raw in (first.as_bytes(), again.as_bytes(), broken.as_bytes()):
        _queue(db, settings, box, raw)

    def parse(raw: bytes) -> ParsedMessage:
        if b"breaks the parser" in raw:
            raise RuntimeError("a bug")
        return parse_message(raw)

    monkeypatch.setattr(crmdrop.worker, "parse_message", parse)
    file_next(db, settings)
    rows = _deliveries(db)
    assert [(r.status, r.attempts) for r in rows] == [
        ("filed", 1),
        ("duplicate", 1),
        ("filed", 1),
        ("queued", 1),
    ]
    # The duplicate's record points at the note filed before; the new one's at its own.
    assert rows[1].note_id == rows[0].note_id is not None
    assert rows[2].note_id not in (None, rows[0].note_id)
    for row, message in zip(rows[1:3], (first, again), strict=True):
        assert row.plan is not None and row.plan["message_key"] == message_key(
            parse_message(message.as_bytes())
        )
        assert row.finished_at is not None and row.claimed_at is None
    assert rows[1].reason.startswith(f"already filed as note {rows[0].note_id};")
    assert not rows[2].reason.startswith("already filed")
    failed = rows[3]
    assert failed.finished_at is None and "a bug" in (failed.last_error or "")
    assert failed.plan is None and failed.reason.startswith("attempt 1 failed")
