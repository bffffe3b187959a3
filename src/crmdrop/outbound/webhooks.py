"""Send queued webhook messages, signed the Standard Webhooks way, with retries.

Signature (https://www.standardwebhooks.com): `webhook-signature: v1,<base64 HMAC-SHA256>`
over `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the base64-decoded part of the
`whsec_` secret. Like the reply sender: on PostgreSQL the message stays locked (SKIP
LOCKED) while it is sent, so several workers never send it twice at once; on SQLite one
sender runs, and it posts *outside* the write transaction, which would otherwise hold
SQLite's one write lock (and every SMTP accept) for the length of a slow endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop import netguard
from crmdrop.config import Settings
from crmdrop.outbound.replies import build_reply
from crmdrop.store.db import Database
from crmdrop.store.models import Account, User, WebhookEndpoint
from crmdrop.store.outbox import queue_reply
from crmdrop.store.webhooks import DueMessage, Outcome, RetryPolicy, next_due, record_attempt

log = logging.getLogger(__name__)

NOTICES_PER_HOUR = 100  # the disable notice is sent once per endpoint; not an error reply


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header value for one message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _pinned(url: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The URL rewritten to the public address its host resolves to *now* (refusing a
    private one, crmdrop.netguard), with the Host header and TLS server name of the
    original: the connection goes to the address that was checked, never to a second
    answer of the DNS (rebinding). The certificate is still verified for the name."""
    target = httpx.URL(url)
    ip = netguard.public_address(url)
    headers = {"host": target.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return target.copy_with(host=str(ip)), headers, extensions


def post(due: DueMessage, timeout: float, *, allow_private: bool) -> Outcome:
    """POST one message; its status code, or the error when no answer came (or the
    URL's host now resolves to an address webhooks may not reach)."""
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "crmdrop-webhooks",
        "webhook-id": due.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(due.secret, due.msg_id, timestamp, due.body),
    }
    url, extensions = httpx.URL(due.url), dict[str, str]()
    if not allow_private:
        try:
            url, host, extensions = _pinned(due.url)
        except netguard.BlockedAddress as exc:
            return Outcome(None, f"refused: {exc}"[:500], 0)
        headers.update(host)
    started = time.monotonic()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(
                url, content=due.body.encode(), headers=headers, extensions=extensions
            )
    except httpx.HTTPError as exc:
        elapsed = int((time.monotonic() - started) * 1000)
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], elapsed)
    elapsed = int((time.monotonic() - started) * 1000)
    return Outcome(response.status_code, None, elapsed)


def _policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=settings.webhook_retry_base_seconds,
        max_attempts=settings.webhook_max_attempts,
        disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
    )


def _owner(session: Session, endpoint: WebhookEndpoint) -> User | None:
    """Who registered the endpoint, or else the account's first user."""
    if endpoint.user_id is not None:
        return session.get(User, endpoint.user_id)
    return session.scalar(
        select(User).where(User.account_id == endpoint.account_id).order_by(User.id).limit(1)
    )


def _tell_owner(
    session: Session, endpoint: WebhookEndpoint, settings: Settings, now: datetime, error: str
) -> None:
    """Mail the endpoint's owner that it was disabled, through the outbox (same transaction)."""
    owner = _owner(session, endpoint)
    account = session.get(Account, endpoint.account_id)
    if owner is None or account is None:
        return
    raw = build_reply(
        template="webhook_disabled",
        subject=f"crmdrop: webhook endpoint #{endpoint.id} disabled",
        sender=settings.reply_sender,
        to=owner.email,
        in_reply_to=None,
        now=now,
        user_name=owner.name,
        endpoint_id=endpoint.id,
        account=account.name,
        url=endpoint.url,
        failing_since=(endpoint.failing_since or now).isoformat(timespec="seconds"),
        last_error=error,
    )
    queue_reply(
        session,
        account_id=account.id,
        user_id=owner.id,
        delivery_id=None,
        kind="webhook_disabled",
        mail_to=owner.email,
        raw=raw,
        now=now,
        per_hour=NOTICES_PER_HOUR,
    )
    log.warning("webhook endpoint #%s disabled after failing for a day", endpoint.id)


def _finish(session: Session, due: DueMessage, outcome: Outcome, settings: Settings) -> None:
    now = datetime.now(UTC)
    disabled = record_attempt(session, due.id, outcome, now=now, policy=_policy(settings))
    if disabled is not None:
        _tell_owner(
            session, disabled, settings, now, outcome.error or f"HTTP {outcome.status_code}"
        )
    if not outcome.ok:
        log.info(
            "webhook %s to endpoint #%s failed: %s",
            due.msg_id,
            due.endpoint_id,
            outcome.error or outcome.status_code,
        )


def send_webhook(db: Database, settings: Settings) -> bool:
    """Send the next due webhook message; False when none is due."""
    now = datetime.now(UTC)
    allowed = settings.webhook_allow_private
    if not db.is_sqlite:
        with db.writing() as session:
            due = next_due(session, now, skip_locked=True)
            if due is None:
                return False
            outcome = post(due, settings.webhook_timeout_seconds, allow_private=allowed)
            _finish(session, due, outcome, settings)
            return True
    with db.reading() as session:
        due = next_due(session, now, skip_locked=False)
    if due is None:
        return False
    outcome = post(due, settings.webhook_timeout_seconds, allow_private=allowed)
    with db.writing() as session:
        _finish(session, due, outcome, settings)
    return True
