"""The worker: claim → parse → decide → apply → done | retry | park.

Filing and marking the delivery done commit in one transaction, so a crash at
any point either leaves the delivery queued (and it is processed again after
a restart) or leaves it filed — never lost, never filed twice (SPEC §6.1).
Each delivery is tried on its own: an error rolls back that delivery only,
is recorded, and is retried with backoff, then parked (cf. Mailman's runner).
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.dropbox.decide import decide
from crmdrop.dropbox.plan import DropboxKind, FilingPlan, Outcome
from crmdrop.dropbox.senders import check_sender
from crmdrop.mail.model import ParsedMessage
from crmdrop.mail.parse import parse_message
from crmdrop.outbound.replies import build_reply
from crmdrop.store.accounts import user_info
from crmdrop.store.apply import apply_plan
from crmdrop.store.db import Database
from crmdrop.store.inbound import next_due, record_failure
from crmdrop.store.models import Account, Delivery, User
from crmdrop.store.outbox import queue_reply
from crmdrop.store.view import SqlAccountView

log = logging.getLogger(__name__)


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
) -> Decision:
    """The authoritative decision for one message to one dropbox (no writes)."""
    account = session.get(Account, user.account_id)
    assert account is not None
    owner = user_info(session, user)
    author = next((m.address for m in parsed.from_ if m.address), None)
    recipients = [m.address for m in [*parsed.to, *parsed.cc] if m.address]
    verdict = check_sender(author, recipients, owner)
    if not verdict.allowed:
        return Decision(None, verdict.detail)
    view = SqlAccountView(session, account)
    plan = decide(
        parsed, kind, owner, view, dropbox_domain=settings.domain, now=now, envelope_from=mail_from
    )
    if plan.note is not None and plan.note.date is not None and plan.note.date.tzinfo is None:
        # A forwarded block's date line is in the forwarder's local time: the owner's zone.
        local = plan.note.date.replace(tzinfo=ZoneInfo(owner.timezone))
        plan.note = replace(plan.note, date=local)
    return Decision(plan, None)


def _addresses_text(plan: FilingPlan) -> str:
    lines = [
        f"- {d.address}: {d.rule}{' (' + d.detail + ')' if d.detail else ''}"
        for d in plan.addresses
    ]
    return "\n".join(lines) or "- (no email address at all)"


def _file(
    session: Session, delivery: Delivery, parsed: ParsedMessage, settings: Settings, now: datetime
) -> None:
    """Decide and apply one delivery inside the caller's transaction."""
    user = session.get(User, delivery.user_id)
    account = session.get(Account, delivery.account_id)
    assert user is not None and account is not None
    decision = decide_delivery(
        session,
        parsed,
        user=user,
        kind=DropboxKind(delivery.dropbox_kind),
        mail_from=delivery.mail_from,
        settings=settings,
        now=now,
    )
    delivery.finished_at = now
    delivery.last_error = None
    if decision.plan is None:
        delivery.status = "rejected"
        delivery.reason = f"rejected by the worker: {decision.refused}"
        return
    plan = decision.plan
    done = apply_plan(session, plan, delivery=delivery, parsed=parsed, account=account, now=now)
    record = plan.to_json()
    record["applied"] = done
    delivery.plan = record
    delivery.status = plan.outcome.value
    delivery.reason = plan.reason
    if plan.outcome is Outcome.NO_CONTACT:
        if plan.reply_to:
            raw = build_reply(
                template="no_contact",
                subject=f"Not filed: {parsed.subject or '(no subject)'}",
                sender=settings.reply_sender,
                to=plan.reply_to,
                in_reply_to=parsed.message_id,
                now=now,
                user_name=user.name,
                subject_text=parsed.subject,
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
        else:
            delivery.reason += f"; no reply ({plan.auto_generated or 'no address to reply to'})"


def process_one(db: Database, settings: Settings) -> bool:
    """Process the next due delivery; False when the queue has nothing due."""
    now = datetime.now(UTC)
    target: int | None = None
    raw = b""
    if db.is_sqlite:
        # Parse before taking SQLite's single write lock, so accepts do not wait on it.
        with db.reading() as session:
            candidate = next_due(session, now, skip_locked=False)
            if candidate is None:
                return False
            target, raw = candidate.id, candidate.raw or b""
    claimed = target
    try:
        parsed = parse_message(raw) if target is not None else None
        with db.writing() as session:
            if target is not None:
                delivery = session.get(Delivery, target)
                if delivery is None or delivery.status != "queued":
                    return True  # finished meanwhile
            else:
                delivery = next_due(session, now, skip_locked=True)
                if delivery is None:
                    return False
                claimed = delivery.id
                parsed = parse_message(delivery.raw or b"")
            assert parsed is not None
            _file(session, delivery, parsed, settings, now)
            log.info("delivery #%s: %s (%s)", delivery.id, delivery.status, delivery.reason)
        return True
    except Exception:
        if claimed is None:
            raise
        error = traceback.format_exc()
        log.error("delivery #%s failed:\n%s", claimed, error)
        with db.writing() as session:
            record_failure(
                session,
                claimed,
                error,
                now=datetime.now(UTC),
                max_attempts=settings.max_attempts,
                retry_base=settings.retry_base_seconds,
            )
        return True


class WorkerThread(threading.Thread):
    """Runs `process_one` until stopped; sleeps only when the queue is empty."""

    def __init__(self, db: Database, settings: Settings) -> None:
        super().__init__(name="crmdrop-worker", daemon=True)
        self.db = db
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                busy = process_one(self.db, self.settings)
            except Exception:
                log.exception("worker loop error; pausing")
                busy = False
            if not busy:
                self.stopping.wait(self.settings.worker_poll_seconds)
