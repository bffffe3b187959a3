"""Personal API tokens (docs/api.md): shown once, stored as a SHA-256, revocable.

A token acts as its user (same account, same role): authenticating returns the user.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop.store.accounts import StoreError, get_user
from crmdrop.store.models import ApiToken, User

PREFIX = "crd_"
# Stamping last use on every request would make each API read a write (one writer on SQLite).
LAST_USED_GRANULARITY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    """A token as `tokens list` and the API show it: never the secret itself."""

    id: int
    user: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _info(token: ApiToken, user_email: str) -> TokenInfo:
    return TokenInfo(
        token.id, user_email, token.name, token.created_at, token.last_used_at, token.revoked_at
    )


def create_token(session: Session, user_email: str, name: str, *, now: datetime) -> tuple[int, str]:
    """A new token for the user: its id and the token, which is never shown again."""
    clean = name.strip()
    if not clean:
        raise StoreError("a token needs a name (--name), to tell it apart when revoking")
    user = get_user(session, user_email)
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=clean, token_hash=hash_token(token), created_at=now)
    session.add(row)
    session.flush()
    return row.id, token


def list_tokens(session: Session, user_email: str) -> list[TokenInfo]:
    user = get_user(session, user_email)
    rows = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    )
    return [_info(t, user.email) for t in rows]


def revoke_token(session: Session, token_id: int, *, now: datetime) -> TokenInfo:
    """Revoke at once: the next request with it gets 401. Revoking twice is harmless."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise StoreError(f"no API token #{token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
    user = session.get(User, row.user_id)
    assert user is not None
    return _info(row, user.email)


@dataclass(frozen=True)
class Bearer:
    """Who a live token acts as; `stale`: its last use should be stamped (touch_token)."""

    token_id: int
    user_id: int
    account_id: int
    epoch: int  # the user's session epoch: a token holds while its user is active
    stale: bool


def authenticate(session: Session, token: str, *, now: datetime) -> Bearer | None:
    """The user a live token acts as, or None (unknown or revoked). Reads only."""
    row = session.execute(
        select(
            ApiToken.id,
            ApiToken.revoked_at,
            ApiToken.last_used_at,
            User.id,
            User.account_id,
            User.session_epoch,
        )
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).first()
    if row is None or row[1] is not None:
        return None
    stale = row[2] is None or now - row[2] > LAST_USED_GRANULARITY
    return Bearer(token_id=row[0], user_id=row[3], account_id=row[4], epoch=row[5], stale=stale)


def touch_token(session: Session, token_id: int, *, now: datetime) -> None:
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = now
