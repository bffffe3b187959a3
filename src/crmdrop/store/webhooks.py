"""Outbound webhooks, the store side (docs/webhooks.md): endpoints, events queued in the
transaction of the change they report (the webhook outbox), and the attempts log.

The sender (`outbound/webhooks.py`) takes due messages from here; this module knows
nothing of HTTP.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Connection, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from crmdrop import netguard
from crmdrop.store.accounts import StoreError
from crmdrop.store.models import WebhookAttempt, WebhookEndpoint, WebhookMessage, table_of
from crmdrop.store.signals import Outbound, mark_queued


class Event(StrEnum):
    NOTE_FILED = "note.filed"
    CONTACT_CREATED = "contact.created"
    COMPANY_CREATED = "company.created"
    CASE_CREATED = "case.created"
    OPPORTUNITY_CREATED = "opportunity.created"
    TASK_CREATED = "task.created"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_REJECTED = "delivery.rejected"


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


ATTEMPTS_KEPT = 100  # per endpoint: the log shows the last ones, not all history
MAX_URL = 2000


def parse_events(names: list[str] | str) -> list[Event]:
    """`note.filed,contact.created` (or a list) → events; an unknown name is refused."""
    items = names.split(",") if isinstance(names, str) else names
    wanted = [n.strip() for n in items if n.strip()]
    if not wanted:
        raise StoreError("name at least one event (" + ", ".join(Event) + ")")
    unknown = [n for n in wanted if n not in Event.__members__.values()]
    if unknown:
        raise StoreError(
            f"unknown event {', '.join(map(repr, unknown))} (known: {', '.join(Event)})"
        )
    return list(dict.fromkeys(Event(n) for n in wanted))


def check_url(url: str, *, allow_private: bool) -> str:
    """A well-formed http(s) URL whose host resolves only to public addresses, unless
    `allow_private` (the webhook_allow_private setting): see crmdrop.netguard."""
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 — urlsplit checks the port only when asked
    except ValueError:
        raise StoreError(f"{url!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"{url!r} is not an http(s) URL")
    if len(url) > MAX_URL:
        raise StoreError(f"a webhook URL may be at most {MAX_URL} characters")
    if not allow_private:
        try:
            netguard.public_address(url.strip())
        except netguard.BlockedAddress as exc:
            raise StoreError(
                f"refused webhook URL: {exc}; crmdrop sends webhooks only to public "
                "addresses (set CRMDROP_WEBHOOK_ALLOW_PRIVATE=true to allow private ones)"
            ) from None
    return url.strip()


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class EndpointInfo:
    id: int
    account_id: int
    url: str
    events: list[str]
    enabled: bool
    failing_since: datetime | None
    disabled_at: datetime | None
    created_at: datetime


def endpoint_info(e: WebhookEndpoint) -> EndpointInfo:
    return EndpointInfo(
        e.id,
        e.account_id,
        e.url,
        list(e.events),
        e.enabled,
        e.failing_since,
        e.disabled_at,
        e.created_at,
    )


def add_endpoint(
    session: Session,
    account_id: int,
    url: str,
    events: list[str] | str,
    *,
    user_id: int | None,
    now: datetime,
    allow_private: bool,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; its secret, shown to the caller (it signs every message)."""
    endpoint = WebhookEndpoint(
        account_id=account_id,
        user_id=user_id,
        url=check_url(url, allow_private=allow_private),
        secret=new_secret(),
        events=[e.value for e in parse_events(events)],
        enabled=True,
        created_at=now,
    )
    session.add(endpoint)
    session.flush()
    return endpoint, endpoint.secret


def list_endpoints(session: Session, account_id: int) -> list[EndpointInfo]:
    rows = session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.account_id == account_id)
        .order_by(WebhookEndpoint.id)
    )
    return [endpoint_info(e) for e in rows]


def get_endpoint(session: Session, endpoint_id: int, account_id: int | None) -> WebhookEndpoint:
    """The endpoint, if it is the account's (None: any account, for the admin's CLI)."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or (account_id is not None and endpoint.account_id != account_id):
        raise LookupError(f"no webhook endpoint #{endpoint_id}")
    return endpoint


def remove_endpoint(session: Session, endpoint_id: int, account_id: int | None) -> None:
    """Remove it with its queued messages and its attempts log."""
    endpoint = get_endpoint(session, endpoint_id, account_id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint.id))
    session.execute(delete(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


@dataclass(frozen=True)
class AttemptInfo:
    id: int
    message_id: int
    event: str
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


def last_attempts(session: Session, endpoint_id: int, limit: int = 20) -> list[AttemptInfo]:
    rows = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit)
    )
    return [
        AttemptInfo(
            a.id, a.message_id, a.event, a.attempted_at, a.status_code, a.error, a.duration_ms
        )
        for a in rows
    ]


_CACHE_KEY = "crmdrop.webhook_endpoints"


def _subscribers(session: Session, account_id: int) -> list[tuple[int, list[str]]]:
    """The account's enabled endpoints, read once per transaction (filing emits several
    events; a batch files many messages of the same accounts)."""
    cache: dict[int, list[tuple[int, list[str]]]] = session.info.setdefault(_CACHE_KEY, {})
    if account_id not in cache:
        found = session.connection().execute(_SUBSCRIBERS, {"account": account_id})
        cache[account_id] = [(row.id, list(row.events)) for row in found]
    return cache[account_id]


_ENDPOINTS = WebhookEndpoint.__table__.c
# Built once, run as Core (no ORM execution path): asked in every filing transaction.
_SUBSCRIBERS = select(_ENDPOINTS.id, _ENDPOINTS.events).where(
    _ENDPOINTS.account_id == bindparam("account"), _ENDPOINTS.enabled.is_(True)
)


def _body(event: Event, data: dict[str, Any], now: datetime) -> str:
    return json.dumps(
        {"type": event.value, "timestamp": now.isoformat(), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )


def emit_on_connection(
    conn: Connection, account_id: int, event: Event, data: dict[str, Any], *, now: datetime
) -> int:
    """`emit` for the intake path, which writes through a plain Connection (no Session,
    to stay lean): one SELECT of the account's enabled endpoints, and an INSERT only when
    one of them wants the event. Same transaction as the change, like `emit`."""
    rows = conn.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.events).where(
            WebhookEndpoint.account_id == account_id, WebhookEndpoint.enabled.is_(True)
        )
    ).all()
    targets = [row.id for row in rows if event.value in row.events]
    if not targets:
        return 0
    msg_id, body = "msg_" + uuid.uuid4().hex, _body(event, data, now)
    conn.execute(
        insert(table_of(WebhookMessage)),
        [
            {
                "account_id": account_id,
                "endpoint_id": endpoint_id,
                "event": event.value,
                "msg_id": msg_id,
                "body": body,
                "status": MessageStatus.QUEUED.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for endpoint_id in targets
        ],
    )
    return len(targets)


def emit(
    session: Session, account_id: int, event: Event, data: dict[str, Any], *, now: datetime
) -> int:
    """Queue `event` for every endpoint of the account that wants it, in the caller's
    transaction; how many messages were queued. The body is fixed now: it is what is
    signed and sent, however late."""
    targets = [eid for eid, events in _subscribers(session, account_id) if event in events]
    if not targets:
        return 0
    msg_id, body = "msg_" + uuid.uuid4().hex, _body(event, data, now)
    for endpoint_id in targets:
        session.add(
            WebhookMessage(
                account_id=account_id,
                endpoint_id=endpoint_id,
                event=event.value,
                msg_id=msg_id,
                body=body,
                status=MessageStatus.QUEUED,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    session.flush()
    mark_queued(session, Outbound.WEBHOOKS)
    return len(targets)


@dataclass(frozen=True)
class DueMessage:
    """A message to send, with what the sender needs of its endpoint."""

    id: int
    endpoint_id: int
    url: str
    secret: str
    msg_id: str
    body: str


def next_due(session: Session, now: datetime, *, skip_locked: bool) -> DueMessage | None:
    """The oldest due message of an enabled endpoint (locked on PostgreSQL)."""
    query = (
        select(WebhookMessage)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
        .where(
            WebhookMessage.status == MessageStatus.QUEUED,
            WebhookMessage.next_attempt_at <= now,
            WebhookEndpoint.enabled.is_(True),
        )
        .order_by(WebhookMessage.next_attempt_at, WebhookMessage.id)
        .limit(1)
    )
    if skip_locked:
        query = query.with_for_update(of=WebhookMessage, skip_locked=True)
    msg = session.scalar(query)
    if msg is None:
        return None
    endpoint = session.get(WebhookEndpoint, msg.endpoint_id)
    assert endpoint is not None
    return DueMessage(msg.id, endpoint.id, endpoint.url, endpoint.secret, msg.msg_id, msg.body)


@dataclass(frozen=True)
class Outcome:
    """What one POST came to: the status code, or the error when there was no answer."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_attempts: int
    disable_after: timedelta


MAX_DELAY = timedelta(hours=1)


def record_attempt(
    session: Session, message_id: int, outcome: Outcome, *, now: datetime, policy: RetryPolicy
) -> WebhookEndpoint | None:
    """Log the attempt, finish or reschedule the message, and track the endpoint's health.
    The endpoint when this attempt made it disabled (its owner is to be told), else None."""
    msg = session.get(WebhookMessage, message_id)
    if msg is None or msg.status != MessageStatus.QUEUED:
        return None  # removed, or finished by another sender meanwhile
    endpoint = session.get(WebhookEndpoint, msg.endpoint_id)
    assert endpoint is not None
    msg.attempts += 1
    session.add(
        WebhookAttempt(
            endpoint_id=endpoint.id,
            message_id=msg.id,
            event=msg.event,
            attempted_at=now,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
    )
    _prune_attempts(session, endpoint.id)
    if outcome.ok:
        msg.status, msg.sent_at, msg.last_error = MessageStatus.SENT, now, None
        endpoint.failing_since = None
        return None
    msg.last_error = outcome.error or f"HTTP {outcome.status_code}"
    if msg.attempts >= policy.max_attempts:
        msg.status = MessageStatus.FAILED
    else:
        delay = timedelta(seconds=policy.base_seconds * 2 ** (msg.attempts - 1))
        msg.next_attempt_at = now + min(delay, MAX_DELAY)
    if endpoint.failing_since is None:
        endpoint.failing_since = now
    if endpoint.enabled and now - endpoint.failing_since >= policy.disable_after:
        endpoint.enabled, endpoint.disabled_at = False, now
        return endpoint
    return None


def _prune_attempts(session: Session, endpoint_id: int) -> None:
    session.flush()
    cutoff = session.scalar(
        select(WebhookAttempt.id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
        .offset(ATTEMPTS_KEPT)
        .limit(1)
    )
    if cutoff is not None:
        session.execute(
            delete(WebhookAttempt).where(
                WebhookAttempt.endpoint_id == endpoint_id, WebhookAttempt.id <= cutoff
            )
        )


def prune_messages(session: Session, *, before: datetime, limit: int = 500) -> int:
    """Delete up to `limit` finished messages (sent, or given up) queued before `before`;
    how many (call again until 0). A message one of the endpoint's kept attempts refers
    to stays, so the last attempts per endpoint (ATTEMPTS_KEPT) remain visible; queued
    ones always stay (a disabled endpoint's wait for it to be enabled again)."""
    shown = select(WebhookAttempt.id).where(WebhookAttempt.message_id == WebhookMessage.id)
    ids = list(
        session.scalars(
            select(WebhookMessage.id)
            .where(
                WebhookMessage.status.in_([MessageStatus.SENT, MessageStatus.FAILED]),
                WebhookMessage.created_at < before,
                ~shown.exists(),
            )
            .limit(limit)
        )
    )
    if ids:
        session.execute(
            delete(WebhookMessage).where(WebhookMessage.id.in_(ids)),
            execution_options={"synchronize_session": False},
        )
    return len(ids)


def backlog(session: Session) -> int:
    """Webhook messages still to send (for /metrics)."""
    return int(
        session.scalar(
            select(func.count(WebhookMessage.id)).where(
                WebhookMessage.status == MessageStatus.QUEUED
            )
        )
        or 0
    )


class DeliveryFacts(Protocol):
    """What a delivery event tells of a delivery: an ORM `Delivery` or the worker's
    `ClaimedDelivery` (`store.inbound`)."""

    @property
    def id(self) -> int: ...
    @property
    def account_id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def dropbox_kind(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def received_at(self) -> datetime: ...


def emit_delivery(session: Session, delivery: DeliveryFacts, event: Event, *, now: datetime) -> int:
    """Queue delivery.failed / delivery.rejected. The dropbox address is left out: its
    token is a secret (only its kind is said)."""
    data = {
        "id": delivery.id,
        "status": delivery.status,
        "reason": delivery.reason,
        "user_id": delivery.user_id,
        "dropbox": delivery.dropbox_kind,
        "subject": delivery.subject,
        "author": delivery.author,
        "message_id": delivery.message_id,
        "attempts": delivery.attempts,
        "received_at": delivery.received_at.isoformat(),
        "stage": "worker",
    }
    return emit(session, delivery.account_id, event, data, now=now)


def enable_endpoint(session: Session, endpoint_id: int, account_id: int | None) -> EndpointInfo:
    """Turn a disabled endpoint back on; its messages still queued are sent again."""
    endpoint = get_endpoint(session, endpoint_id, account_id)
    endpoint.enabled, endpoint.failing_since, endpoint.disabled_at = True, None, None
    session.flush()
    return endpoint_info(endpoint)
