"""The worker under faults of its own (issue #11), on SQLite and PostgreSQL: our failures
are retried and parked as `failed` (never `rejected`), only known unique-key races are
retried at once, a slow delivery is parked at its time budget, a late duplicate creates
no second case, and the accept-time sender verdict is judged again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

import crmdrop.worker
from crmdrop.config import Settings, load_settings
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.filing import BatchCache, Decision, apply_decision, decide_delivery
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts
from crmdrop.store.contacts import list_contacts
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery, claim_due, lock_queued
from crmdrop.store.models import Case, ContactEmail, Delivery, Note, User, note_contacts
from crmdrop.store.signals import Outbound
from crmdrop.worker import is_known_race, process_one
from tests.support import make_message


def _owner(db: Database, email: str = "olive@mycorp.example") -> tuple[User, str]:
    with db.writing() as session:
        user = accounts.add_user(session, email, name="O", account="acme")
        return user, f"dropbox-{user.token}-case@dropbox.test"


def _queue(db: Database, settings: Settings, box: str, raw: bytes, sender: str) -> None:
    receiver = Receiver(db, settings)
    _, rcpt = receiver.check_recipient(box)
    assert rcpt is not None
    verdict = receiver.accept(mail_from=sender, rcpts=[rcpt], raw=raw, protocol="smtp", peer="t")
    assert verdict.replies[0].startswith("250"), verdict.replies


def _drain(db: Database, settings: Settings) -> None:
    for _ in range(100):
        if not process_one(db, settings):
            return


def _deliveries(db: Database) -> list[Delivery]:
    with db.reading() as session:
        return list(session.scalars(sa.select(Delivery).order_by(Delivery.id)))


def _one_message_to_two_users(db: Database) -> tuple[Settings, User, bytes]:
    """A migrated database where one message from a client to alice and bob is queued
    for each of them; (the settings, alice, the message)."""
    db.migrate()
    settings = _settings(db)
    alice, box_a = _owner(db, "alice@mycorp.example")
    _bob, box_b = _owner(db, "bob@mycorp.example")
    raw = make_message(
        from_="buyer@client.example", to=["alice@mycorp.example", "bob@mycorp.example"]
    ).as_bytes()
    for box in (box_a, box_b):
        _queue(db, settings, box, raw, "buyer@client.example")
    return settings, alice, raw


def _settings(db: Database, **changes: object) -> Settings:
    return load_settings(
        domain="dropbox.test", database_url=db.url, retry_base_seconds=0, **changes
    )


def test_a_parser_failure_is_retried_then_parked_as_failed_never_rejected(
    store: tuple[Database, Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, _ = store
    db.migrate()
    settings = _settings(db, max_attempts=3)
    user, box = _owner(db)
    _queue(db, settings, box, make_message(from_=user.email, to=["j@c.example"]).as_bytes(), "")

    def failing_parse(raw: bytes) -> ParsedMessage:
        parsed = parse_message(b"")  # the empty fallback, as a bug of ours would give it
        parsed.failure = "parse failed: RuntimeError: a bug"
        return parsed

    monkeypatch.setattr(crmdrop.worker, "parse_message", failing_parse)
    with caplog.at_level(logging.ERROR, logger="crmdrop.worker"):
        _drain(db, settings)
    [delivery] = _deliveries(db)
    assert delivery.status == "failed", delivery.reason
    assert delivery.attempts == 3
    assert "parse failed" in delivery.reason and "a bug" in (delivery.last_error or "")
    assert any("parse failed" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_only_unique_keys_that_workers_race_for_count_as_a_race(
    store: tuple[Database, Settings],
) -> None:
    db, _ = store
    db.migrate()
    settings = _settings(db)
    user, box = _owner(db)
    _queue(db, settings, box, make_message(from_=user.email, to=["j@c.example"]).as_bytes(), "")
    _drain(db, settings)
    with db.reading() as session:
        existing = session.scalars(sa.select(ContactEmail)).one()
        taken = {"account_id": user.account_id, "email": existing.email}
    errors: list[IntegrityError] = []
    for values in ({**taken, "contact_id": existing.contact_id}, {**taken, "contact_id": None}):
        try:
            with db.writing() as session:
                session.execute(sa.insert(ContactEmail.__table__).values(**values))
        except IntegrityError as exc:
            errors.append(exc)
    assert len(errors) == 2
    race, not_null = errors
    assert is_known_race(race)  # the same contact address twice: another worker won
    assert not is_known_race(not_null)  # a NULL where none may be: a bug, backoff


def test_a_delivery_over_its_time_budget_is_parked_at_once_with_its_reason(
    store: tuple[Database, Settings],
) -> None:
    db, _ = store
    db.migrate()
    settings = _settings(db, delivery_time_budget=0.0)
    user, box = _owner(db)
    _queue(db, settings, box, make_message(from_=user.email, to=["j@c.example"]).as_bytes(), "")
    _queue(db, settings, box, make_message(from_=user.email, to=["k@c.example"]).as_bytes(), "")
    _drain(db, settings)
    deliveries = _deliveries(db)
    assert [d.status for d in deliveries] == ["failed", "failed"]
    assert all(d.attempts == 1 for d in deliveries)
    assert all("over the budget" in d.reason for d in deliveries)


def _decide_on_one_snapshot(
    db: Database, settings: Settings, raws: list[bytes], now: datetime
) -> list[tuple[int, ParsedMessage, Decision]]:
    """Each queued delivery (its raw message given in queue order) decided as the worker
    decides a batch: case dropboxes, one read snapshot, one cache, nothing filed yet."""
    decided = []
    with db.reading() as session:
        cache = BatchCache()
        for delivery, raw in zip(_deliveries(db), raws, strict=True):
            parsed = parse_message(raw)
            decision = decide_delivery(
                session,
                parsed,
                user_id=delivery.user_id,
                kind=DropboxKind.CASE,
                mail_from="buyer@client.example",
                settings=settings,
                now=now,
                cache=cache,
            )
            decided.append((delivery.id, parsed, decision))
    return decided


def test_a_plan_that_turns_out_a_duplicate_creates_no_second_case(
    store: tuple[Database, Settings],
) -> None:
    db, _ = store
    settings, alice, raw = _one_message_to_two_users(db)
    now = datetime.now(UTC)
    # both decided on one snapshot, before either is filed
    decisions = _decide_on_one_snapshot(db, settings, [raw, raw], now)
    for _, _, decision in decisions:
        assert decision.plan is not None
        assert [r.action for r in decision.plan.records] == ["create"]
    for delivery_id, parsed, decision in decisions:
        with db.writing() as session:
            delivery = lock_queued(session, [delivery_id])[delivery_id]
            apply_decision(
                session, delivery, parsed, decision, settings=settings, now=now, cache=BatchCache()
            )
    with db.reading() as session:
        cases = session.scalars(sa.select(Case).where(Case.account_id == alice.account_id)).all()
    assert len(cases) == 1
    assert [d.status for d in _deliveries(db)] == ["filed", "duplicate"]


def test_a_batch_applied_in_one_transaction_files_a_late_duplicate_and_a_new_contact_once(
    store: tuple[Database, Settings],
) -> None:
    """Three deliveries decided on one snapshot, each creating the same new contact (one
    message to two users of the account, and another message from the same sender),
    then applied as the worker applies a batch: in one transaction, with the duplicate
    checks, contacts and links looked up and written once for the whole batch."""
    db, _ = store
    db.migrate()
    settings = _settings(db)
    alice, box_a = _owner(db, "alice@mycorp.example")
    _bob, box_b = _owner(db, "bob@mycorp.example")
    to = ["alice@mycorp.example", "bob@mycorp.example"]
    first = make_message(from_="buyer@client.example", to=to).as_bytes()
    second = make_message(from_="buyer@client.example", to=to, subject="Again").as_bytes()
    raws = [first, first, second]
    for box, raw in zip((box_a, box_b, box_a), raws, strict=True):
        _queue(db, settings, box, raw, "buyer@client.example")
    now = datetime.now(UTC)
    decided = _decide_on_one_snapshot(db, settings, raws, now)
    for _, _, decision in decided:
        assert decision.plan is not None
        assert [c.action for c in decision.plan.contacts] == ["create_contact"]
    with db.writing() as session:
        crmdrop.worker._apply_all(session, decided, settings, now)
    deliveries = _deliveries(db)
    assert [d.status for d in deliveries] == ["filed", "duplicate", "filed"]
    assert deliveries[1].note_id == deliveries[0].note_id != deliveries[2].note_id
    with db.reading() as session:
        emails = session.scalars(
            sa.select(ContactEmail).where(ContactEmail.account_id == alice.account_id)
        ).all()
        assert [e.email for e in emails] == ["buyer@client.example"]
        filed_under = session.execute(
            sa.select(note_contacts.c.note_id).where(
                note_contacts.c.contact_id == emails[0].contact_id
            )
        ).scalars()
        assert sorted(filed_under) == sorted({d.note_id for d in deliveries})
        cases = session.scalars(sa.select(Case).where(Case.account_id == alice.account_id)).all()
        assert len(cases) == 2  # one per message, none for the duplicate
        found = list_contacts(session, alice.account_id, search="client.example").rows
        assert [c.id for c in found] == [emails[0].contact_id]  # its search terms, once


def test_the_worker_judges_the_sender_with_the_verdict_recorded_at_accept_time(
    store: tuple[Database, Settings],
) -> None:
    db, _ = store
    db.migrate()
    settings = _settings(db)
    user, box = _owner(db)
    raw = make_message(from_=user.email, to=["j@c.example"]).as_bytes()
    now = datetime.now(UTC)
    with db.writing() as session:
        add_delivery(
            session,
            NewDelivery(
                account_id=user.account_id,
                user_id=user.id,
                dropbox_kind="note",
                rcpt_to=box,
                mail_from=user.email,
                protocol="pipe",
                peer="t",
                message_id=None,
                subject="",
                author=user.email,
                sender_auth="dmarc=fail for mycorp.example (from mx.mycorp.example)",
            ),
            raw,
            now=now,
        )
    _drain(db, settings)
    [delivery] = _deliveries(db)
    assert delivery.status == "rejected"
    assert "dmarc=fail" in delivery.reason


def test_a_failure_that_cannot_be_recorded_still_leaves_the_delivery_retryable(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _ = store
    db.migrate()
    settings = _settings(db, max_attempts=5)
    user, box = _owner(db)
    _queue(db, settings, box, make_message(from_=user.email, to=["j@c.example"]).as_bytes(), "")

    def failing_parse(raw: bytes) -> ParsedMessage:
        parsed = parse_message(b"")
        parsed.failure = "parse failed: RuntimeError: a bug"
        return parsed

    def failing_record(*args: object, **kwargs: object) -> str:
        raise RuntimeError("the database went away while recording")

    monkeypatch.setattr(crmdrop.worker, "parse_message", failing_parse)
    monkeypatch.setattr(crmdrop.worker, "record_failure", failing_record)
    process_one(db, settings)
    [delivery] = _deliveries(db)
    assert delivery.status == "queued"
    assert delivery.claimed_at is None  # claimable again now, not after the 5-minute lease
    assert delivery.attempts == 1


def test_a_note_filed_elsewhere_while_a_batch_is_decided_makes_its_delivery_a_duplicate(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One message to two users, in two batches (of one): while the first batch is being
    decided (on PostgreSQL inside the transaction that applies it, with no check of its
    own before the note's INSERT), another worker files the second delivery. The first
    is then filed as a duplicate of that note — never a second note, never a failure."""
    db, _ = store
    settings, _alice, _raw = _one_message_to_two_users(db)
    monkeypatch.setattr(crmdrop.worker, "BATCH", 1)
    decide = crmdrop.worker._decide_batch
    meanwhile: list[bool] = []

    def decide_then_another_worker_files(*args: Any, **kwargs: Any) -> Any:
        decided = decide(*args, **kwargs)
        if not meanwhile:
            meanwhile.append(True)
            assert process_one(db, settings)  # the other delivery, filed and committed
        return decided

    monkeypatch.setattr(crmdrop.worker, "_decide_batch", decide_then_another_worker_files)
    assert process_one(db, settings)
    assert meanwhile
    first, second = _deliveries(db)
    assert (second.status, first.status) == ("filed", "duplicate")
    assert first.note_id == second.note_id is not None
    assert first.attempts == 1 and first.last_error is None  # not a failure, not retried
    with db.reading() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Case)) == 1


class _Died(BaseException):
    """The worker process ends here (SIGKILL, OOM): no handler of its own runs."""


def test_a_worker_that_dies_between_its_claim_and_the_filing_loses_nothing(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim commits before the batch is parsed (no transaction is open during the
    parse): a worker that dies then leaves its deliveries claimed, and they are filed
    once when the claim is taken over — by the next worker on SQLite, after the lease
    on PostgreSQL."""
    db, _ = store
    db.migrate()
    settings = _settings(db)
    user, box = _owner(db)
    for to in ("j@c.example", "k@c.example"):
        raw = make_message(from_=user.email, to=[to]).as_bytes()
        _queue(db, settings, box, raw, user.email)

    def dies(*args: object) -> None:
        raise _Died

    with monkeypatch.context() as patch:
        patch.setattr(crmdrop.worker, "parse_message", dies)
        with pytest.raises(_Died):
            process_one(db, settings)
    assert [(d.status, d.attempts) for d in _deliveries(db)] == [("queued", 1)] * 2
    assert all(d.claimed_at is not None for d in _deliveries(db))
    assert not process_one(db, settings)  # claimed: nobody else's yet
    later = datetime.now(UTC) + timedelta(seconds=settings.claim_lease_seconds + 1)
    if db.is_sqlite:
        crmdrop.worker.worker_started(db)
        later = datetime.now(UTC)
    queued: set[Outbound] = set()
    crmdrop.worker._process_batch(db, settings, later, queued)
    deliveries = _deliveries(db)
    assert [(d.status, d.attempts) for d in deliveries] == [("filed", 2)] * 2
    with db.reading() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Note)) == 2


def test_no_transaction_is_open_while_a_batch_is_parsed(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a backend that waits in an open transaction for the worker's parse
    holds its snapshot (and its locks) for nothing: the parse runs between the claim's
    transaction and the filing's, with no connection checked out."""
    db, _ = store
    db.migrate()
    settings = _settings(db)
    user, box = _owner(db)
    for to in ("j@c.example", "k@c.example"):
        _queue(db, settings, box, make_message(from_=user.email, to=[to]).as_bytes(), "")
    held: list[int] = []

    def parse(raw: bytes) -> ParsedMessage:
        pools = {db.write_engine.pool, db.read_engine.pool}
        held.append(sum(pool.checkedout() for pool in pools))  # type: ignore[attr-defined]
        return parse_message(raw)

    monkeypatch.setattr(crmdrop.worker, "parse_message", parse)
    _drain(db, settings)
    assert [d.status for d in _deliveries(db)] == ["filed", "filed"]
    assert held == [0, 0]


class _RoundTrips:
    """What a PostgreSQL client sends and waits for, from SQLAlchemy's events: each
    statement, and the BEGIN psycopg sends before the first statement of a transaction
    and the COMMIT that ends it (none outside a transaction block: autocommit)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def statement(self, conn: Any, cursor: Any, *args: Any) -> None:
        dbapi = cursor.connection
        if (
            not dbapi.autocommit
            and dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            self.sent.append("BEGIN")
        self.sent.append("statement")

    def commit(self, conn: Any) -> None:
        dbapi = conn.connection.driver_connection
        if (
            not dbapi.autocommit
            and dbapi.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        ):
            self.sent.append("COMMIT")


# PostgreSQL only: SQLite has no round trips (and decides outside its write lock).
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_on_postgresql_a_batch_is_claimed_in_one_round_trip_and_filed_in_one_transaction(
    store: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement, BEGIN and COMMIT is a round trip on PostgreSQL (a batch of one
    took three transactions: the claim's BEGIN, SELECT, UPDATE, COMMIT; the decision's
    snapshot; the apply). Now the claim is one statement outside a transaction block,
    the parse waits on nothing, and the decision and its writes are one transaction."""
    db, _ = store
    assert not db.is_sqlite
    db.migrate()
    settings = _settings(db)
    user, box = _owner(db)
    for to in ("j@c.example", "k@c.example"):
        _queue(db, settings, box, make_message(from_=user.email, to=[to]).as_bytes(), "")
    trips = _RoundTrips()

    def parse(raw: bytes) -> ParsedMessage:
        trips.sent.append("parse")
        return parse_message(raw)

    monkeypatch.setattr(crmdrop.worker, "parse_message", parse)
    sa.event.listen(db.write_engine, "before_cursor_execute", trips.statement)
    sa.event.listen(db.write_engine, "commit", trips.commit)
    try:
        assert crmdrop.worker.file_next(db, settings) is crmdrop.worker.Progress.DRAINED
    finally:
        sa.event.remove(db.write_engine, "before_cursor_execute", trips.statement)
        sa.event.remove(db.write_engine, "commit", trips.commit)
    assert [d.status for d in _deliveries(db)] == ["filed", "filed"]
    claim, filing = trips.sent[:3], trips.sent[3:]
    assert claim == ["statement", "parse", "parse"]
    assert filing[0] == "BEGIN" and filing[-1] == "COMMIT"
    assert "BEGIN" not in filing[1:] and "COMMIT" not in filing[:-1]


def test_the_worker_parks_a_delivery_out_of_attempts_when_its_claim_picks_it(
    store: tuple[Database, Settings],
) -> None:
    """A delivery whose every claim ended with its worker's death is picked by the next
    claim, not claimed: parked as failed (on PostgreSQL after the one-statement claim,
    in a transaction of its own, checked again there)."""
    db, _ = store
    db.migrate()
    settings = _settings(db, max_attempts=1)
    user, box = _owner(db)
    _queue(db, settings, box, make_message(from_=user.email, to=["j@c.example"]).as_bytes(), "")
    now = datetime.now(UTC)
    with db.writing() as session:  # the one attempt, whose worker died
        claim = claim_due(
            session, now, limit=1, max_bytes=10**6, max_attempts=1, skip_locked=not db.is_sqlite
        )
    assert len(claim.deliveries) == 1
    later = now + timedelta(seconds=settings.claim_lease_seconds + 1)
    queued: set[Outbound] = set()
    progress = crmdrop.worker._process_batch(db, settings, later, queued)
    assert progress is crmdrop.worker.Progress.MORE  # it parked one: look again at once
    assert queued == {Outbound.WEBHOOKS}  # delivery.failed, for the endpoints that want it
    [delivery] = _deliveries(db)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.reason.startswith("parked after 1 attempts")
    assert crmdrop.worker._process_batch(db, settings, later, set()) is crmdrop.worker.Progress.IDLE
