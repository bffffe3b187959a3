"""Failed sign-ins, counted per key (`ip:ADDR`, `user:EMAIL`) over a sliding window.

The policy (how many, how long) is the caller's; the store only records and counts. Rows
older than the window are pruned when a new failure is recorded.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from crmdrop.store.models import LoginFailure


def failures_since(session: Session, keys: list[str], since: datetime) -> dict[str, int]:
    """How many failures each key has had since `since` (0 for none)."""
    rows = session.execute(
        select(LoginFailure.key, func.count(LoginFailure.id))
        .where(LoginFailure.key.in_(keys), LoginFailure.at >= since)
        .group_by(LoginFailure.key)
    ).all()
    found = {key: count for key, count in rows}
    return {key: found.get(key, 0) for key in keys}


def record_failure(
    session: Session, keys: list[str], at: datetime, *, prune_before: datetime
) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.at < prune_before))
    session.add_all(LoginFailure(key=key, at=at) for key in keys)
    session.flush()


def clear_failures(session: Session, key: str) -> None:
    """After a successful sign-in: the account's count starts again (the IP's does not)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))
