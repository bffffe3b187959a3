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

import enum
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.dropbox.decide import message_key, normalize_message_id
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.filing import BatchCache, Decision, apply_decision, decide_delivery
from crmdrop.mail.dates import warm_date_tables
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message
from crmdrop.parseahead import CHILD_MAX_BYTES, ChildParse, ParseProcess, error_summary
from crmdrop.store.accounts import AccountSettings
from crmdrop.store.apply import BatchWrites
from crmdrop.store.db import Database
from crmdrop.store.inbound import (
    Claim,
    ClaimedDelivery,
    claim_due,
    load_large,
    lock_queued,
    park_exhausted,
    pick_due,
    record_failure,
    release_claim,
    release_claims,
    unclaim,
)
from crmdrop.store.signals import Outbound, queued_in

log = logging.getLogger(__name__)


class OverBudget(RuntimeError):
    """One delivery took longer than `delivery_time_budget`: parked at once, so that the
    queue moves on (it would take as long again on every retry)."""


# Unique keys two workers can race for while filing the same thread or contact: the
# loser retries at once and finds the winner's row. Any other IntegrityError is a bug.
_RACE_TABLES = frozenset(
    {
        "notes",
        "contact_emails",
        "company_emails",
        "cases",
        "opportunities",
        "tasks",
        "note_contacts",
        "note_companies",
        "note_cases",
        "note_opportunities",
        "task_contacts",
    }
)
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (\w+)\.")


def is_known_race(exc: BaseException) -> bool:
    """A unique-key violation on a table that concurrent filings race for."""
    if not isinstance(exc, IntegrityError):
        return False
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    if diag is not None:  # psycopg: SQLSTATE 23505 unique_violation
        return getattr(orig, "sqlstate", None) == "23505" and diag.table_name in _RACE_TABLES
    found = _SQLITE_UNIQUE.match(str(orig))
    return found is not None and found.group(1) in _RACE_TABLES


@dataclass(frozen=True)
class Failure:
    """One delivery's failed attempt, taken from the exception being handled."""

    delivery_id: int
    error: str  # the traceback
    summary: str  # one line for the processing record
    race: bool  # a unique key another worker took first: retry at once
    park: bool = False  # over its time budget: retrying cannot help

    @classmethod
    def current(cls, delivery_id: int) -> Failure:
        exc = sys.exception()
        assert exc is not None
        return cls(
            delivery_id,
            traceback.format_exc(),
            error_summary(exc),
            is_known_race(exc),
            isinstance(exc, OverBudget),
        )


# Deliveries whose failure could not be recorded (the database was away): released
# as soon as it is back, not after the 5-minute lease.
_UNRECORDED: dict[int, Failure] = {}


def _record_failure(db: Database, settings: Settings, failure: Failure) -> None:
    log.log(
        logging.INFO if failure.race else logging.ERROR,
        "delivery #%s failed: %s",
        failure.delivery_id,
        failure.error if not failure.race else failure.summary,
    )
    now = datetime.now(UTC)
    try:
        with db.writing() as session:
            record_failure(
                session,
                failure.delivery_id,
                failure.error,
                summary=failure.summary,
                immediate=failure.race,
                park=failure.park,
                now=now,
                max_attempts=settings.max_attempts,
                retry_base=settings.retry_base_seconds,
            )
        _UNRECORDED.pop(failure.delivery_id, None)
    except Exception:
        log.exception("could not record the failure of delivery #%s", failure.delivery_id)
        _UNRECORDED[failure.delivery_id] = failure
        _release_unrecorded(db, settings)


def _release_unrecorded(db: Database, settings: Settings) -> None:
    """Make deliveries whose failure went unrecorded claimable again (with backoff)."""
    for delivery_id in list(_UNRECORDED):
        try:
            with db.writing() as session:
                due = datetime.now(UTC) + timedelta(seconds=settings.retry_base_seconds)
                release_claim(session, delivery_id, due=due)
            del _UNRECORDED[delivery_id]
        except Exception:
            log.warning("delivery #%s stays claimed until the database is back", delivery_id)
            return


def _parse(delivery: ClaimedDelivery) -> tuple[ParsedMessage, float]:
    """The delivery's message, parsed, and when its time budget started."""
    started = time.monotonic()
    return parse_message(delivery.raw or b""), started


def _check_budget(started: float, settings: Settings, stage: str) -> None:
    spent = time.monotonic() - started
    if spent > settings.delivery_time_budget:
        raise OverBudget(
            f"took {spent:.1f} s to {stage}, over the budget of "
            f"{settings.delivery_time_budget:g} s (CRMDROP_DELIVERY_TIME_BUDGET)"
        )


def _decide(
    session: Session,
    delivery: ClaimedDelivery,
    parsed: ParsedMessage,
    started: float,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> Decision:
    """The decision for a parsed delivery, within its time budget (checked after the
    parse and after the decision: both are bounded by budgets of their own inside)."""
    _check_budget(started, settings, "parse")
    decision = decide_delivery(
        session,
        parsed,
        user_id=delivery.user_id,
        kind=DropboxKind(delivery.dropbox_kind),
        mail_from=delivery.mail_from,
        settings=settings,
        now=now,
        received=delivery.received_at,
        cache=cache,
        sender_auth=delivery.sender_auth,
    )
    _check_budget(started, settings, "decide")
    return decision


BATCH = 32
BATCH_BYTES = 32 * 1024 * 1024  # raw bytes held at once (a message may be 25 MB)


class Progress(enum.Enum):
    """What one step of the filing loop did: whether to look at the queue again at once."""

    IDLE = "idle"  # nothing was due
    DRAINED = "drained"  # filed a batch; nothing else was due when it was claimed
    MORE = "more"  # more is due now (left by the claim, deferred, or lost to a race)


def _claim(db: Database, settings: Settings, now: datetime, limit: int) -> Claim:
    """A batch claimed, small messages loaded with it; a large one is read after, outside
    the write lock (SQLite). PostgreSQL: one statement outside a transaction block
    (`pick_due`; deliveries out of attempts are parked after it, in a transaction);
    SQLite: a short write transaction (`claim_due`)."""
    lease = timedelta(seconds=settings.claim_lease_seconds)
    if db.is_sqlite:
        with db.writing() as session:
            claim = claim_due(
                session,
                now,
                limit=limit,
                max_bytes=BATCH_BYTES,
                max_attempts=settings.max_attempts,
                skip_locked=False,
                lease=lease,
            )
    else:
        claim = _claim_at_once(db, settings, now, limit, lease)
    _load_large(db, claim.deliveries)
    return claim


def _load_large(db: Database, deliveries: list[ClaimedDelivery]) -> None:
    """Read the messages the claim left out (large ones), in a read transaction."""
    if any(d.raw is None and d.raw_digest is not None for d in deliveries):
        with db.reading() as session:
            load_large(session, deliveries)


def _claim_at_once(
    db: Database, settings: Settings, now: datetime, limit: int, lease: timedelta
) -> Claim:
    """PostgreSQL: the claim in one round trip (an idle worker's whole look at the queue)."""
    with db.autocommit() as conn:
        picked = pick_due(
            conn,
            now,
            limit=limit,
            max_bytes=BATCH_BYTES,
            max_attempts=settings.max_attempts,
            lease=lease,
        )
    parked = 0
    if picked.exhausted:
        with db.writing() as session:
            parked = park_exhausted(session, picked.exhausted, now, settings.max_attempts)
    return Claim(picked.deliveries, parked, picked.more)


def _process_batch(
    db: Database,
    settings: Settings,
    now: datetime,
    queued: set[Outbound],
    ahead: ParseAhead | None = None,
) -> Progress:
    """Claim a batch (its messages loaded with it), parse it outside any transaction,
    then decide and apply it; should the apply fail, each delivery is applied (or
    failed) on its own. On PostgreSQL every statement, and the BEGIN and COMMIT of each
    transaction, is a round trip, so the claim is one statement outside a transaction
    block and a batch decides and applies in one transaction (`_file_at_once`). SQLite has one
    writer: there the batch is decided on a read snapshot and only applied under the
    write lock (`_file_in_two`). The claim skips rows other workers hold (SKIP LOCKED)
    and is a lease, so any number of workers share the queue and a dead one's batch is
    taken over when its lease runs out. Each step asks the database once per batch what
    it can (`BatchCache`). `queued` gets the outgoing queues the batch added to.
    `ahead` (SQLite): while more is due, the next batch is claimed before this one is
    filed and parsed meanwhile by a second process (`ParseAhead`)."""
    claim, parsed, failed = _claimed_and_parsed(db, settings, now, ahead)
    if claim.parked:  # parking emits delivery.failed
        queued.add(Outbound.WEBHOOKS)
    if not claim.deliveries:
        return Progress.MORE if claim.parked else Progress.IDLE
    if ahead is not None and claim.more:  # the next batch, parsed while this one files
        _claim_ahead(db, settings, ahead)
    file = _file_in_two if db.is_sqlite else _file_at_once
    deferred = file(db, settings, now, parsed, failed, queued)
    for failure in failed:
        _record_failure(db, settings, failure)
        queued.add(Outbound.WEBHOOKS)  # a parked delivery emits delivery.failed
    more = claim.more or bool(deferred) or any(failure.race for failure in failed)
    return Progress.MORE if more else Progress.DRAINED


Decided = tuple[int, ParsedMessage, Decision]  # a delivery's id, its message, its decision
# A claimed delivery, its message, and the CPU time its parse took (its time budget).
Parsed = tuple[ClaimedDelivery, ParsedMessage, float]


def _claim_ahead(db: Database, settings: Settings, ahead: ParseAhead) -> None:
    """Claim the next batch for `ahead`; should that fail, this batch is filed all the
    same (the next one is claimed in its turn)."""
    try:
        claim = _claim(db, settings, datetime.now(UTC), BATCH)
    except Exception:
        log.warning("claiming the next batch ahead failed; filing this one", exc_info=True)
        return
    ahead.start(claim)


def _claimed_and_parsed(
    db: Database, settings: Settings, now: datetime, ahead: ParseAhead | None
) -> tuple[Claim, list[Parsed], list[Failure]]:
    """The batch claimed ahead and parsed meanwhile, if there is one; else a new claim,
    parsed here."""
    if ahead is not None and ahead.claim is not None:
        return ahead.take(db)
    claim = _claim(db, settings, now, BATCH)
    failed: list[Failure] = []
    return claim, _parse_all(claim.deliveries, failed), failed


@dataclass
class ParseAhead:
    """SQLite: the next batch, claimed before this one is filed and parsed meanwhile by
    a second process (`crmdrop.parseahead`), so that the worker uses a second core. Held
    by the filing thread from one batch to the next; `close` gives back a batch claimed
    but not filed (its attempt does not count)."""

    process: ParseProcess = field(default_factory=ParseProcess)
    claim: Claim | None = None
    sent: list[int] = field(default_factory=list)  # the deliveries the child parses

    def start(self, claim: Claim) -> None:
        """Hand the batch's messages to the child; a large one is let go until `take`
        loads it again, so that the worker does not hold two batches' large messages."""
        self.claim = claim
        self.sent = []
        for i, delivery in enumerate(claim.deliveries):
            if delivery.raw is not None and len(delivery.raw) <= CHILD_MAX_BYTES:
                self.sent.append(i)
            elif delivery.raw_digest is not None:
                delivery.raw = None
        raws = [claim.deliveries[i].raw or b"" for i in self.sent]
        if raws and not self.process.submit(raws):
            self.sent = []

    def take(self, db: Database) -> tuple[Claim, list[Parsed], list[Failure]]:
        """The claimed batch, parsed: by the child where it answered, here otherwise."""
        assert self.claim is not None
        claim, sent = self.claim, self.sent
        self.claim, self.sent = None, []
        _load_large(db, claim.deliveries)
        answers = self.process.result() if sent else None
        done: dict[int, ChildParse] = {}
        if answers is not None and len(answers) == len(sent):
            done = dict(zip(sent, answers, strict=True))
        parsed: list[Parsed] = []
        failed: list[Failure] = []
        for i, delivery in enumerate(claim.deliveries):
            answer = done.get(i)
            if answer is None:
                parsed.extend(_parse_all([delivery], failed))
                continue
            delivery.raw = None
            if answer.message is None:
                failed.append(Failure(delivery.id, answer.error, answer.summary, race=False))
            else:
                parsed.append((delivery, answer.message, answer.seconds))
        return claim, parsed, failed

    def close(self, db: Database) -> None:
        """Stop the child; give back the batch claimed ahead, if any."""
        self.process.close()
        claim, self.claim, self.sent = self.claim, None, []
        if claim is not None and claim.deliveries:
            with db.writing() as session:
                unclaim(session, [d.id for d in claim.deliveries])


def _parse_all(deliveries: list[ClaimedDelivery], failed: list[Failure]) -> list[Parsed]:
    """Parse the claimed messages, outside any transaction (on PostgreSQL a backend
    waiting in an open transaction for the parse was most of a batch's time); their
    raw bytes are let go as soon as each is parsed. Failures go to `failed`."""
    parsed: list[Parsed] = []
    for delivery in deliveries:
        try:
            message, started = _parse(delivery)
            # The budget counts this delivery's own parse, not its neighbours'.
            parsed.append((delivery, message, time.monotonic() - started))
        except Exception:
            failed.append(Failure.current(delivery.id))
        finally:
            delivery.raw = None
    return parsed


def _file_at_once(
    db: Database,
    settings: Settings,
    now: datetime,
    parsed: list[Parsed],
    failed: list[Failure],
    queued: set[Outbound],
) -> list[int]:
    """PostgreSQL: lock the batch's deliveries that are still queued, decide and apply
    them in one transaction (the late-duplicate check is the decision's own: a note
    filed meanwhile by another worker fails on its unique key, and the batch is then
    applied one at a time, each checked again). The ids deferred to the next round."""
    decided: list[Decided] = []
    deferred: list[int] = []
    cache = BatchCache(writes=BatchWrites(deferred=True, postgresql=True))
    try:
        with db.writing() as session:
            locked = _lock(session, parsed, failed)
            mine = [one for one in parsed if one[0].id in locked]
            decided, deferred = _decide_batch(session, mine, settings, now, failed, cache)
            unclaim(session, deferred)
            todo = [(locked[i], message, decision) for i, message, decision in decided]
            _apply_locked(session, todo, settings, now, cache)
        queued.update(queued_in(session))  # committed
    except Exception:
        _apply_one_by_one(db, settings, now, decided, deferred, cache.accounts, failed, queued)
    return deferred


def _lock(
    session: Session, parsed: list[Parsed], failed: list[Failure]
) -> dict[int, ClaimedDelivery]:
    """The batch's deliveries still queued, locked (`lock_queued`); when the database
    fails, every delivery's attempt failed with it."""
    try:
        return lock_queued(session, [delivery.id for delivery, _, _ in parsed])
    except Exception:
        failed.extend(Failure.current(delivery.id) for delivery, _, _ in parsed)
        raise


def _file_in_two(
    db: Database,
    settings: Settings,
    now: datetime,
    parsed: list[Parsed],
    failed: list[Failure],
    queued: set[Outbound],
) -> list[int]:
    """SQLite: decide the batch on a read snapshot, then apply it in a short write
    transaction (the write lock is the whole database's), each delivery locked and its
    note checked again there. The ids deferred to the next round."""
    cache = BatchCache()
    with db.reading() as session:
        decided, deferred = _decide_batch(session, parsed, settings, now, failed, cache)
    accounts = cache.accounts  # the settings the decisions were taken with
    try:
        with db.writing() as session:
            unclaim(session, deferred)
            _apply_all(session, decided, settings, now, accounts)
        queued.update(queued_in(session))  # committed
    except Exception:
        _apply_one_by_one(db, settings, now, decided, deferred, accounts, failed, queued)
    return deferred


def _apply_one_by_one(
    db: Database,
    settings: Settings,
    now: datetime,
    decided: list[Decided],
    deferred: list[int],
    accounts: dict[int, AccountSettings],
    failed: list[Failure],
    queued: set[Outbound],
) -> None:
    """After a batch's transaction failed: give back the deferred claims, then apply
    each decision in a transaction of its own (locked and checked again there)."""
    if decided:
        log.warning("a batch of %d failed; applying one at a time", len(decided))
    if deferred:
        with db.writing() as session:
            unclaim(session, deferred)
    for one in decided:
        try:
            with db.writing() as session:
                _apply_all(session, [one], settings, now, accounts)
            queued.update(queued_in(session))
        except Exception:
            failed.append(Failure.current(one[0]))


def _decide_batch(
    session: Session,
    parsed: list[Parsed],
    settings: Settings,
    now: datetime,
    failed: list[Failure],
    cache: BatchCache,
) -> tuple[list[Decided], list[int]]:
    """Decide the parsed deliveries in claim order: the decided ones and those deferred
    to the next round (`_depends_on`); failures go to `failed`."""
    decided: list[Decided] = []
    deferred: list[int] = []
    keys: set[str] = set()
    try:
        cache.prefetch_decide(session, [(d.account_id, d.user_id, m) for d, m, _ in parsed])
    except Exception:  # the database failed: each delivery's attempt failed with it
        failed.extend(Failure.current(delivery.id) for delivery, _, _ in parsed)
        return [], []
    for delivery, message, parse_time in parsed:
        try:
            if _depends_on(message, keys):
                deferred.append(delivery.id)  # next round, once the other is filed
                continue
            keys.add(message_key(message))
            started = time.monotonic() - parse_time
            decision = _decide(session, delivery, message, started, settings, now, cache)
            decided.append((delivery.id, message, decision))
        except Exception:
            failed.append(Failure.current(delivery.id))
    return decided, deferred


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


def _apply_all(
    session: Session,
    decided: list[Decided],
    settings: Settings,
    now: datetime,
    accounts: dict[int, AccountSettings] | None = None,
) -> None:
    """Apply decisions taken on an earlier snapshot, in one transaction, to those of their
    deliveries that no other worker finished meanwhile (locked, then checked).
    `accounts`: the settings the decisions were taken with (read again when not given)."""
    queued = lock_queued(session, [delivery_id for delivery_id, _, _ in decided])
    todo = [(queued[i], parsed, decision) for i, parsed, decision in decided if i in queued]
    cache = BatchCache(accounts=dict(accounts or {}), writes=BatchWrites.deferring(session))
    _apply_locked(session, todo, settings, now, cache)


def _apply_locked(
    session: Session,
    todo: list[tuple[ClaimedDelivery, ParsedMessage, Decision]],
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> None:
    """Apply decisions to locked deliveries; `cache.writes` holds the batch's writes.
    A view the decisions were taken on in this same transaction (`_file_at_once`)
    answers the late-duplicate check from what it read; a new one asks again."""
    assert cache.writes is not None
    cache.prefetch_apply(session, [(d.account_id, decision) for d, _, decision in todo])
    for delivery, parsed, decision in todo:
        apply_decision(session, delivery, parsed, decision, settings=settings, now=now, cache=cache)
    cache.writes.finish(session, now)


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


def file_next(
    db: Database,
    settings: Settings,
    queued: set[Outbound] | None = None,
    ahead: ParseAhead | None = None,
) -> Progress:
    """Process the next batch of due deliveries (`Progress.IDLE`: none was due).
    `queued`: gets the outgoing queues (replies, webhooks) that the batch added to, so
    that only their senders are woken. `ahead`: see `_process_batch`."""
    if _UNRECORDED:
        _release_unrecorded(db, settings)
    now = datetime.now(UTC)
    return _process_batch(db, settings, now, set() if queued is None else queued, ahead)


def process_one(db: Database, settings: Settings) -> bool:
    """Process the next due deliveries; False when the queue has nothing due."""
    return file_next(db, settings) is not Progress.IDLE


class PollingThread(threading.Thread):
    """Runs `step` until stopped; when it found nothing to do, waits until `wake` is set
    (a delivery was queued) or `idle` seconds have passed (the safety poll). With
    `gather`, a wake-up is followed by that many seconds more, so that one step serves
    a burst of wake-ups (one per filed batch) rather than one step for each.

    An error in one step is logged and followed by a pause, never the end of the loop.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], bool],
        idle: float,
        wake: threading.Event | None = None,
        *,
        gather: float = 0.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.idle = idle
        self.wake = wake or threading.Event()
        self.gather = gather
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.wake.clear()  # a signal from now on is for the next step
            try:
                busy = self.step()
            except Exception:
                log.exception("%s: step failed; pausing", self.name)
                busy = False
            if not busy and self.wake.wait(self.idle) and self.gather:
                self.stopping.wait(self.gather)
