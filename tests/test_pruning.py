"""The worker's retention step (`serve.purge_step`, its periodic thread) also deletes
finished webhook messages past CRMDROP_WEBHOOK_KEEP_DAYS — keeping those the endpoint's
last attempts still show — and Mailgun tokens once their freshness window has passed,
on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from crmdrop.config import Settings
from crmdrop.receive.providers import Provider, ProviderError, intake_key, mailgun
from crmdrop.serve import purge_step
from crmdrop.store import accounts, webhooks
from crmdrop.store.db import Database
from crmdrop.store.inbound import claim_intake_key
from crmdrop.store.models import IntakeKey, WebhookAttempt, WebhookMessage

POLICY = webhooks.RetryPolicy(base_seconds=1, max_attempts=2, disable_after=timedelta(days=1))
OK = webhooks.Outcome(200, None, 3)
DOWN = webhooks.Outcome(None, "ConnectError", 3)


def _queue(db: Database, account_id: int, subject: str, *, now: datetime) -> None:
    with db.writing() as session:
        webhooks.emit(session, account_id, webhooks.Event.NOTE_FILED, {"s": subject}, now=now)


def _send_all(db: Database, outcome: webhooks.Outcome, *, now: datetime) -> None:
    """What the sender does with every due message: one attempt each."""
    with db.writing() as session:
        for msg in session.scalars(
            sa.select(WebhookMessage).where(WebhookMessage.status == "queued")
        ).all():
            webhooks.record_attempt(session, msg.id, outcome, now=now, policy=POLICY)


def _bodies(db: Database, endpoint_id: int) -> list[tuple[str, str]]:
    with db.reading() as session:
        rows = session.execute(
            sa.select(WebhookMessage.body, WebhookMessage.status)
            .where(WebhookMessage.endpoint_id == endpoint_id)
            .order_by(WebhookMessage.id)
        ).all()
    return [(body.split('"s":"')[1].split('"')[0], status) for body, status in rows]


def test_finished_webhook_messages_past_the_window_go_and_the_last_attempts_stay(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    db.migrate()
    assert settings.webhook_keep_days == 30  # the default
    now = datetime.now(UTC)
    old = now - timedelta(days=31)
    with db.writing() as session:
        user = accounts.add_user(session, "own@corp.example", name="O", account="acme")
        busy, _ = webhooks.add_endpoint(
            session, user.account_id, "https://a.example/h", "note.filed",
            user_id=None, now=old, allow_private=True,
        )  # fmt: skip
        account_id, busy_id = user.account_id, busy.id
    # Long ago: one sent, one given up after its attempts, one still queued
    _queue(db, account_id, "old-sent", now=old)
    _send_all(db, OK, now=old)
    _queue(db, account_id, "old-failed", now=old)
    _send_all(db, DOWN, now=old)
    _send_all(db, DOWN, now=old)  # max_attempts=2: given up
    with db.writing() as session:  # a second endpoint
        quiet, _ = webhooks.add_endpoint(
            session, account_id, "https://b.example/h", "note.filed",
            user_id=None, now=old, allow_private=True,
        )  # fmt: skip
        quiet_id = quiet.id
    _queue(db, account_id, "old-waiting", now=old)  # for both endpoints
    _send_all(db, OK, now=old)
    _queue(db, account_id, "old-waiting", now=old)
    with db.writing() as session:  # the second one is disabled: its message waits
        session.execute(
            sa.update(webhooks.WebhookEndpoint)
            .where(webhooks.WebhookEndpoint.id == quiet_id)
            .values(enabled=False)
        )
        session.execute(  # the busy endpoint's copy was given up on
            sa.update(WebhookMessage)
            .where(WebhookMessage.endpoint_id == busy_id, WebhookMessage.status == "queued")
            .values(status="failed")
        )
    # Since then the busy endpoint took more than the attempts log keeps (100)
    for i in range(webhooks.ATTEMPTS_KEPT):
        _queue(db, account_id, f"new-{i}", now=now)
        with db.writing() as session:  # only the busy endpoint's are sent
            msg = session.scalars(
                sa.select(WebhookMessage).where(
                    WebhookMessage.endpoint_id == busy_id, WebhookMessage.status == "queued"
                )
            ).one()
            webhooks.record_attempt(session, msg.id, OK, now=now, policy=POLICY)

    assert purge_step(db, settings)
    assert not purge_step(db, settings)

    busy_left = _bodies(db, busy_id)
    # the old sent and failed ones are gone: no kept attempt shows them any more
    assert [s for s, _ in busy_left] == [f"new-{i}" for i in range(webhooks.ATTEMPTS_KEPT)]
    assert all(status == "sent" for _, status in busy_left)
    # the disabled endpoint's old queued message waits, whatever its age; its old sent one
    # stays too: its last attempt (that endpoint's only one) still shows it
    assert _bodies(db, quiet_id) == [("old-waiting", "sent"), ("old-waiting", "queued")]
    with db.reading() as session:
        shown = webhooks.last_attempts(session, busy_id, limit=200)
        kept = session.scalar(
            sa.select(sa.func.count(WebhookAttempt.id)).where(WebhookAttempt.endpoint_id == busy_id)
        )
    assert len(shown) == webhooks.ATTEMPTS_KEPT == kept


def test_an_old_message_its_endpoints_last_attempt_shows_is_kept(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    db.migrate()
    old = datetime.now(UTC) - timedelta(days=40)
    with db.writing() as session:
        user = accounts.add_user(session, "own@corp.example", name="O", account="acme")
        endpoint, _ = webhooks.add_endpoint(
            session, user.account_id, "https://a.example/h", "note.filed",
            user_id=None, now=old, allow_private=True,
        )  # fmt: skip
        account_id, endpoint_id = user.account_id, endpoint.id
    _queue(db, account_id, "only", now=old)
    _send_all(db, OK, now=old)
    assert not purge_step(db, settings)
    assert _bodies(db, endpoint_id) == [("only", "sent")]
    with db.reading() as session:
        [attempt] = webhooks.last_attempts(session, endpoint_id)
    assert attempt.status_code == 200


def test_keep_days_zero_keeps_every_webhook_message(store: tuple[Database, Settings]) -> None:
    db, settings = store
    db.migrate()
    settings = settings.model_copy(update={"webhook_keep_days": 0})
    old = datetime.now(UTC) - timedelta(days=400)
    with db.writing() as session:
        user = accounts.add_user(session, "own@corp.example", name="O", account="acme")
        endpoint, _ = webhooks.add_endpoint(
            session, user.account_id, "https://a.example/h", "note.filed",
            user_id=None, now=old, allow_private=True,
        )  # fmt: skip
        account_id, endpoint_id = user.account_id, endpoint.id
    _queue(db, account_id, "kept", now=old)
    _send_all(db, OK, now=old)
    with db.writing() as session:
        session.execute(sa.delete(WebhookAttempt))  # even with no attempt to show it
    assert not purge_step(db, settings)
    assert _bodies(db, endpoint_id) == [("kept", "sent")]


def _signed(key: str, timestamp: float, token: str) -> dict[str, bytes]:
    signature = hmac.new(key.encode(), f"{timestamp:.0f}{token}".encode(), hashlib.sha256)
    return {
        "timestamp": f"{timestamp:.0f}".encode(),
        "token": token.encode(),
        "signature": signature.hexdigest().encode(),
    }


def test_mailgun_tokens_are_forgotten_once_a_replay_would_be_stale_anyway(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    db.migrate()
    window = settings.inbound_max_age_seconds
    now = datetime.now(UTC)
    long_ago = now - timedelta(seconds=2 * window + 120)
    recently = now - timedelta(seconds=2 * window - 120)  # a replay may still be fresh
    old_token = intake_key(Provider.MAILGUN, "old-token")  # as the Mailgun door stores it
    recent_token = intake_key(Provider.MAILGUN, "recent-token")
    sns = intake_key(Provider.SES, "old-sns-message")
    with db.writing() as session:
        for (source, key), when in (
            (old_token, long_ago),
            (recent_token, recently),
            (("imap", "old-imap-message"), long_ago),
            (sns, long_ago),
        ):
            claim_intake_key(session, source, key, now=when)
    assert purge_step(db, settings)
    assert not purge_step(db, settings)
    with db.reading() as session:
        left = session.execute(sa.select(IntakeKey.source, IntakeKey.key)).all()
    assert sorted(map(tuple, left)) == sorted([("imap", "old-imap-message"), recent_token, sns])
    # and the forgotten token cannot come back: its signed timestamp is too old by now
    key = "key-test"
    sent_at = long_ago.timestamp() + window  # the latest timestamp it could have carried
    with pytest.raises(ProviderError, match="stale timestamp"):
        mailgun.verify(_signed(key, sent_at, "old-token"), key, now=now.timestamp(), max_age=window)
