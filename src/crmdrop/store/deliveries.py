"""Processing records as the doors read them: the newest, one, its raw message, counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmdrop.store.accounts import StoreError, get_account
from crmdrop.store.models import Delivery
from crmdrop.store.serialize import delivery_json


def list_deliveries(
    session: Session, *, account: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """The newest processing records first, optionally of one account or status."""
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
    if account:
        query = query.where(Delivery.account_id == get_account(session, account).id)
    if status:
        query = query.where(Delivery.status == status)
    return [delivery_json(d) for d in session.scalars(query)]


def show_delivery(session: Session, delivery_id: int) -> dict[str, Any]:
    """One processing record with its whole decision."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise StoreError(f"no delivery #{delivery_id}")
    return delivery_json(delivery, full=True)


def raw_message(session: Session, delivery_id: int) -> bytes:
    """The message exactly as received (a refused one keeps none)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.raw is None:
        raise StoreError(
            f"no stored message for delivery #{delivery_id} (refused messages keep none)"
        )
    return delivery.raw


def status_counts(session: Session) -> dict[str, int]:
    """How many deliveries are in each status (the status page, `/healthz`)."""
    rows = session.execute(
        select(Delivery.status, func.count(Delivery.id)).group_by(Delivery.status)
    ).all()
    return {status: count for status, count in rows}
