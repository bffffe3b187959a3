"""The outbox: replies queued in the filing transaction, sent later (SPEC §6.4)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmdrop.store.models import Outbox
from crmdrop.store.signals import Outbound, mark_queued
from crmdrop.store.status import ReplyStatus


def queue_reply(
    session: Session,
    *,
    account_id: int,
    user_id: int,
    delivery_id: int | None,
    kind: str,
    mail_to: str,
    raw: bytes,
    now: datetime,
    per_hour: int,
) -> Outbox:
    """Queue a reply, or record it as `suppressed` when the user's hourly limit is reached."""
    recent = session.scalar(
        select(func.count(Outbox.id)).where(
            Outbox.user_id == user_id,
            Outbox.created_at >= now - timedelta(hours=1),
            Outbox.status.in_((ReplyStatus.QUEUED, ReplyStatus.SENT, ReplyStatus.FAILED)),
        )
    )
    status = ReplyStatus.QUEUED if (recent or 0) < per_hour else ReplyStatus.SUPPRESSED
    reason = f"rate limit of {per_hour}/hour reached"
    mark_queued(session, Outbound.REPLIES)
    return _add(session, account_id, user_id, delivery_id, kind, mail_to, raw, now, status, reason)


def _add(
    session: Session,
    account_id: int,
    user_id: int,
    delivery_id: int | None,
    kind: str,
    mail_to: str,
    raw: bytes,
    now: datetime,
    status: ReplyStatus,
    reason: str,
) -> Outbox:
    """The outbox row; `reason` is recorded only when the limit suppressed it."""
    row = Outbox(
        account_id=account_id,
        user_id=user_id,
        delivery_id=delivery_id,
        kind=kind,
        mail_to=mail_to,
        raw=raw,
        status=status,
        attempts=0,
        next_attempt_at=now,
        last_error=None if status is ReplyStatus.QUEUED else reason,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def queue_account_mail(
    session: Session,
    *,
    account_id: int,
    user_id: int,
    kind: str,
    mail_to: str,
    raw: bytes,
    now: datetime,
    per_hour: int,
) -> Outbox:
    """Queue a link mail (password reset, invite, address check): not counted against the
    error-reply limit, but at most `per_hour` of one kind per user (else `suppressed`)."""
    recent = session.scalar(
        select(func.count(Outbox.id)).where(
            Outbox.user_id == user_id,
            Outbox.kind == kind,
            Outbox.created_at >= now - timedelta(hours=1),
        )
    )
    status = ReplyStatus.QUEUED if (recent or 0) < per_hour else ReplyStatus.SUPPRESSED
    reason = f"limit of {per_hour} {kind} mails/hour"
    return _add(session, account_id, user_id, None, kind, mail_to, raw, now, status, reason)


def next_due(session: Session, now: datetime, *, skip_locked: bool) -> Outbox | None:
    query = (
        select(Outbox)
        .where(Outbox.status == ReplyStatus.QUEUED, Outbox.next_attempt_at <= now)
        .order_by(Outbox.id)
        .limit(1)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    return session.scalar(query)
