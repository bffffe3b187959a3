"""Deliver queued replies through the configured relay, with retries.

On PostgreSQL the row stays locked (SKIP LOCKED) while it is sent, so several
senders never send one reply twice. On SQLite one sender runs, and it sends
*outside* the write transaction: holding SQLite's single write lock during
network I/O would stall every SMTP accept.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, datetime, timedelta

from crmdrop.config import Settings, split_hostport
from crmdrop.store.db import Database
from crmdrop.store.models import Outbox
from crmdrop.store.outbox import next_due
from crmdrop.store.status import ReplyStatus

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8


def _relay(settings: Settings, mail_to: str, raw: bytes) -> str | None:
    """Hand one message to the relay; the error text, or None when it was taken."""
    assert settings.smtp_relay
    host, port = split_hostport(settings.smtp_relay)
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            smtp.sendmail(settings.reply_sender, [mail_to], raw)
    except (OSError, smtplib.SMTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _record(row: Outbox, error: str | None, now: datetime) -> None:
    row.attempts += 1
    if error is None:
        row.status = ReplyStatus.SENT
        row.sent_at = now
        log.info("reply #%s sent", row.id)
        return
    row.last_error = error
    if row.attempts >= MAX_ATTEMPTS:
        row.status = ReplyStatus.FAILED
    else:
        row.next_attempt_at = now + timedelta(seconds=2**row.attempts)
    log.warning("reply #%s to the relay failed: %s", row.id, error)


def send_one(db: Database, settings: Settings) -> bool:
    """Send the next due reply; False when there is none (or no relay is configured)."""
    if not settings.smtp_relay:
        return False
    now = datetime.now(UTC)
    if not db.is_sqlite:
        with db.writing() as session:
            row = next_due(session, now, skip_locked=True)
            if row is None:
                return False
            _record(row, _relay(settings, row.mail_to, row.raw), datetime.now(UTC))
            return True
    with db.reading() as session:
        row = next_due(session, now, skip_locked=False)
        if row is None:
            return False
        row_id, mail_to, raw = row.id, row.mail_to, row.raw
    error = _relay(settings, mail_to, raw)
    with db.writing() as session:
        fresh = session.get(Outbox, row_id)
        if fresh is not None and fresh.status == ReplyStatus.QUEUED:
            _record(fresh, error, datetime.now(UTC))
    return True
