"""The worker's loop: claim → parse → decide → apply → done | retry | park.

The filing step itself (decide, apply) is `crmdrop.filing`; this module owns the queue
around it: claiming, batching on SQLite, recording failures, retrying and parking.

Filing and marking the delivery done commit in one transaction, so a crash at
any point either leaves the delivery queued (and it is processed again after
a restart) or leaves it filed — never lost, never filed twice (SPEC §6.1).
Each delivery is tried on its own: an error rolls back that delivery only,
is recorded, and is retried with backoff, then parked (cf. Mailman's runner).
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.dropbox.decide import message_key, normalize_message_id
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.filing import BatchCache, Decision, apply_decision, decide_delivery
from crmdrop.mail.dates import warm_date_tables
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message
from crmdrop.store.db import Database
from crmdrop.store.inbound import (
    claim_due,
    load_claimed,
    record_failure,
    release_claims,
    unclaim,
)
from crmdrop.store.models import Delivery
from crmdrop.store.status import DeliveryStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """One delivery's failed attempt, taken from the exception being handled."""

    delivery_id: int
    error: str  # the traceback
    summary: str  # one line for the processing record
    race: bool  # a unique key another worker took first: retry at once

    @classmethod
    def current(cls, delivery_id: int) -> Failure:
        exc = sys.exception()
        assert exc is not None
        summary = traceback.format_exception_only(exc)[-1].strip().splitlines()[0]
        return cls(delivery_id, traceback.format_exc(), summary, isinstance(exc, IntegrityError))


def _record_failure(db: Database, settings: Settings, failure: Failure) -> None:
    log.log(
        logging.INFO if failure.race else logging.ERROR,
        "delivery #%s failed: %s",
        failure.delivery_id,
        failure.error if not failure.race else failure.summary,
    )
    with db.writing() as session:
        record_failure(
            session,
            failure.delivery_id,
            failure.error,
            summary=failure.summary,
            immediate=failure.race,
            now=datetime.now(UTC),
            max_attempts=settings.max_attempts,
            retry_base=settings.retry_base_seconds,
        )


BATCH = 32
BATCH_BYTES = 32 * 1024 * 1024  # raw bytes held at once (a message may be 25 MB)


def _claim(db: Database, settings: Settings, now: datetime, limit: int) -> tuple[list[int], int]:
    with db.writing() as session:
        return claim_due(
            session,
            now,
            limit=limit,
            max_bytes=BATCH_BYTES,
            max_attempts=settings.max_attempts,
            skip_locked=not db.is_sqlite,
        )


def _process_sqlite(db: Database, settings: Settings, now: datetime) -> bool:
    """SQLite has one writer at a time, and a commit is an fsync: claim a batch, parse
    and decide it under one read snapshot, then apply it in one short write
    transaction. Should that fail, each delivery is applied (or failed) on its own."""
    claimed, parked = _claim(db, settings, now, BATCH)
    if not claimed:
        return parked > 0
    decided: list[tuple[int, ParsedMessage, Decision]] = []
    deferred: list[int] = []
    failed: list[Failure] = []
    with db.reading() as session:
        cache = BatchCache()
        keys: set[str] = set()
        for delivery in load_claimed(session, claimed):
            try:
                parsed = parse_message(delivery.raw or b"")
                if _depends_on(parsed, keys):
                    deferred.append(delivery.id)  # next round, once the other is filed
                    continue
                keys.add(message_key(parsed))
                user = cache.user(session, delivery.user_id)
                decision = decide_delivery(
                    session,
                    parsed,
                    user=user,
                    kind=DropboxKind(delivery.dropbox_kind),
                    mail_from=delivery.mail_from,
                    settings=settings,
                    now=now,
                    received=delivery.received_at,
                    cache=cache,
                )
                decided.append((delivery.id, parsed, decision))
            except Exception:
                failed.append(Failure.current(delivery.id))
    try:
        with db.writing() as session:
            unclaim(session, deferred)
            loaded = BatchCache()
            for delivery_id, parsed, decision in decided:
                _apply_queued(session, delivery_id, parsed, decision, settings, now, loaded)
    except Exception:
        log.warning("a batch of %d failed; applying one at a time", len(decided))
        with db.writing() as session:
            unclaim(session, deferred)
        for delivery_id, parsed, decision in decided:
            try:
                with db.writing() as session:
                    _apply_queued(
                        session, delivery_id, parsed, decision, settings, now, BatchCache()
                    )
            except Exception:
                failed.append(Failure.current(delivery_id))
    for failure in failed:
        _record_failure(db, settings, failure)
    return True


def _depends_on(parsed: ParsedMessage, keys: set[str]) -> bool:
    """Whether a message is, or replies to, one decided earlier in the same batch.

    The batch is decided on one snapshot, which cannot show what the earlier one
    will file (its note, a new case): deciding both at once would make two cases,
    or a reply that misses its thread's case.
    """
    if message_key(parsed) in keys:
        return True
    thread = (normalize_message_id(i) for i in [*parsed.in_reply_to, *parsed.references])
    return any(key in keys for key in thread if key)


def _apply_queued(
    session: Session,
    delivery_id: int,
    parsed: ParsedMessage,
    decision: Decision,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> None:
    """Apply a decision taken on an earlier snapshot, unless another worker finished it."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is not None and delivery.status == DeliveryStatus.QUEUED:
        apply_decision(session, delivery, parsed, decision, settings=settings, now=now, cache=cache)


def _process_locked(db: Database, settings: Settings, now: datetime) -> bool:
    """PostgreSQL: claim one delivery (SKIP LOCKED), then file it in a transaction of its
    own; several workers on any number of hosts share the queue."""
    claimed, parked = _claim(db, settings, now, 1)
    if not claimed:
        return parked > 0
    delivery_id = claimed[0]
    try:
        with db.writing() as session:
            delivery = session.get(Delivery, delivery_id, with_for_update=True)
            if delivery is None or delivery.status != DeliveryStatus.QUEUED:
                return True
            parsed = parse_message(delivery.raw or b"")
            cache = BatchCache()
            decision = decide_delivery(
                session,
                parsed,
                user=cache.user(session, delivery.user_id),
                kind=DropboxKind(delivery.dropbox_kind),
                mail_from=delivery.mail_from,
                settings=settings,
                now=now,
                received=delivery.received_at,
                cache=cache,
            )
            apply_decision(
                session, delivery, parsed, decision, settings=settings, now=now, cache=cache
            )
        return True
    except Exception:
        _record_failure(db, settings, Failure.current(delivery_id))
        return True


def worker_started(db: Database) -> None:
    """On SQLite only one worker runs, so a claim left in the queue is a crashed worker's:
    free it now rather than after the lease (its attempt stays counted). The date tables
    are built here, once, so that no delivery waits for them."""
    warm_date_tables()
    if db.is_sqlite:
        with db.writing() as session:
            released = release_claims(session)
        if released:
            log.warning("released %d deliveries a stopped worker had claimed", released)


def process_one(db: Database, settings: Settings) -> bool:
    """Process the next due delivery; False when the queue has nothing due."""
    now = datetime.now(UTC)
    if db.is_sqlite:
        return _process_sqlite(db, settings, now)
    return _process_locked(db, settings, now)


class PollingThread(threading.Thread):
    """Runs `step` until stopped; sleeps `idle` seconds only when it found nothing to do.

    An error in one step is logged and followed by a pause, never the end of the loop.
    """

    def __init__(self, name: str, step: Callable[[], bool], idle: float) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.idle = idle
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("%s: step failed; pausing", self.name)
                busy = False
            if not busy:
                self.stopping.wait(self.idle)
