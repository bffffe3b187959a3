"""The worker: claim → parse → decide → apply → done | retry | park.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.dropbox.decide import decide, message_key, normalize_message_id
from crmdrop.dropbox.plan import DropboxKind, FilingPlan, Outcome, UserInfo
from crmdrop.dropbox.senders import check_message_sender
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message
from crmdrop.outbound.replies import build_reply
from crmdrop.store.accounts import user_info
from crmdrop.store.apply import apply_plan
from crmdrop.store.db import Database
from crmdrop.store.inbound import (
    claim_due,
    load_claimed,
    record_failure,
    release_claims,
    unclaim,
)
from crmdrop.store.models import Account, Delivery, User
from crmdrop.store.outbox import queue_reply
from crmdrop.store.view import SqlAccountView
from crmdrop.store.webhooks import Event, emit_delivery

log = logging.getLogger(__name__)


@dataclass
class BatchCache:
    """What the deliveries of one batch (one read snapshot) can share."""

    views: dict[int, SqlAccountView] = field(default_factory=dict)
    owners: dict[int, UserInfo] = field(default_factory=dict)
    # The session's identity map holds objects weakly: without these, every
    # delivery of a batch would load its user and account again.
    users: dict[int, User] = field(default_factory=dict)
    accounts: dict[int, Account] = field(default_factory=dict)

    def user(self, session: Session, user_id: int) -> User:
        return _kept(session, self.users, User, user_id)

    def account(self, session: Session, account_id: int) -> Account:
        return _kept(session, self.accounts, Account, account_id)


_M = TypeVar("_M", User, Account)


def _kept(session: Session, kept: dict[int, _M], model: type[_M], key: int) -> _M:
    if key not in kept:
        found = session.get(model, key)
        assert found is not None, f"{model.__name__} #{key} is gone"
        kept[key] = found
    return kept[key]


@dataclass(frozen=True)
class Decision:
    """A plan and the sender check behind it, as `explain` and the worker see it."""

    plan: FilingPlan | None
    refused: str | None  # the sender check's reason when the author may not use the dropbox


def decide_delivery(
    session: Session,
    parsed: ParsedMessage,
    *,
    user: User,
    kind: DropboxKind,
    mail_from: str | None,
    settings: Settings,
    now: datetime,
    cache: BatchCache | None = None,
) -> Decision:
    """The authoritative decision for one message to one dropbox (no writes)."""
    cache = cache or BatchCache()
    account = cache.account(session, user.account_id)
    owner = cache.owners.get(user.id)
    if owner is None:
        owner = cache.owners[user.id] = user_info(session, user)
    verdict = check_message_sender(parsed, owner)
    if not verdict.allowed:
        return Decision(None, verdict.detail)
    view = cache.views.get(account.id)
    if view is None:
        view = cache.views[account.id] = SqlAccountView(session, account)
    plan = decide(
        parsed, kind, owner, view, dropbox_domain=settings.domain, now=now, envelope_from=mail_from
    )
    return Decision(plan, None)


def _addresses_text(plan: FilingPlan) -> str:
    lines = [
        f"- {d.address}: {d.rule}{' (' + d.detail + ')' if d.detail else ''}"
        for d in plan.addresses
    ]
    return "\n".join(lines) or "- (no email address at all)"


def _decide_for(
    session: Session,
    delivery: Delivery,
    parsed: ParsedMessage,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> Decision:
    return decide_delivery(
        session,
        parsed,
        user=cache.user(session, delivery.user_id),
        kind=DropboxKind(delivery.dropbox_kind),
        mail_from=delivery.mail_from,
        settings=settings,
        now=now,
        cache=cache,
    )


def _apply(
    session: Session,
    delivery: Delivery,
    parsed: ParsedMessage,
    decision: Decision,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> None:
    """Carry the decision out and finish the delivery, inside the caller's transaction."""
    delivery.finished_at = now
    delivery.claimed_at = None
    delivery.last_error = None
    if decision.plan is None:
        delivery.status = "rejected"
        delivery.reason = f"rejected by the worker: {decision.refused}"
        emit_delivery(session, delivery, Event.DELIVERY_REJECTED, now=now)
        return
    plan = decision.plan
    account = cache.account(session, delivery.account_id)
    user = cache.user(session, delivery.user_id)
    if plan.note is not None and plan.note_id is None:
        # Decided on an earlier snapshot (SQLite batches): filed since? Then a duplicate.
        filed = SqlAccountView(session, account).filed_note(plan.message_key)
        if filed is not None:
            plan.outcome, plan.note_id = Outcome.DUPLICATE, filed
            plan.reason = f"already filed as note #{filed}; only new links added"
    done = apply_plan(session, plan, delivery=delivery, parsed=parsed, account=account, now=now)
    record = plan.to_json()
    record["applied"] = done
    delivery.plan = record
    delivery.status = plan.outcome.value
    delivery.reason = "; ".join([plan.reason, *plan.notices])
    if plan.outcome is not Outcome.NO_CONTACT:
        return
    if not plan.reply_to:
        delivery.reason += f"; no reply ({plan.auto_generated or 'no address to reply to'})"
        return
    raw = build_reply(
        template="no_contact",
        subject=f"Not filed: {parsed.subject or '(no subject)'}",
        sender=settings.reply_sender,
        to=plan.reply_to,
        in_reply_to=parsed.message_id,
        now=now,
        user_name=user.name,
        original_subject=parsed.subject or "(no subject)",
        reason=plan.reason,
        addresses=_addresses_text(plan),
        rate=settings.reply_rate_per_hour,
    )
    row = queue_reply(
        session,
        account_id=account.id,
        user_id=user.id,
        delivery_id=delivery.id,
        kind="no_contact",
        mail_to=plan.reply_to,
        raw=raw,
        now=now,
        per_hour=settings.reply_rate_per_hour,
    )
    delivery.reason += f"; error reply {row.status} to {plan.reply_to}"


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
                decided.append(
                    (
                        delivery.id,
                        parsed,
                        _decide_for(session, delivery, parsed, settings, now, cache),
                    )
                )
            except Exception:
                failed.append(Failure.current(delivery.id))
    try:
        with db.writing() as session:
            unclaim(session, deferred)
            loaded = BatchCache()
            for delivery_id, parsed, decision in decided:
                _apply_one(session, delivery_id, parsed, decision, settings, now, loaded)
    except Exception:
        log.warning("a batch of %d failed; applying one at a time", len(decided))
        with db.writing() as session:
            unclaim(session, deferred)
        for delivery_id, parsed, decision in decided:
            try:
                with db.writing() as session:
                    _apply_one(session, delivery_id, parsed, decision, settings, now, BatchCache())
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


def _apply_one(
    session: Session,
    delivery_id: int,
    parsed: ParsedMessage,
    decision: Decision,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> None:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.status != "queued":
        return  # finished meanwhile (another worker)
    _apply(session, delivery, parsed, decision, settings, now, cache)
    log.info("delivery #%s: %s (%s)", delivery.id, delivery.status, delivery.reason)


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
            if delivery is None or delivery.status != "queued":
                return True
            parsed = parse_message(delivery.raw or b"")
            cache = BatchCache()
            decision = _decide_for(session, delivery, parsed, settings, now, cache)
            _apply(session, delivery, parsed, decision, settings, now, cache)
            log.info("delivery #%s: %s (%s)", delivery.id, delivery.status, delivery.reason)
        return True
    except Exception:
        _record_failure(db, settings, Failure.current(delivery_id))
        return True


def worker_started(db: Database) -> None:
    """On SQLite only one worker runs, so a claim left in the queue is a crashed worker's:
    free it now rather than after the lease (its attempt stays counted)."""
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
