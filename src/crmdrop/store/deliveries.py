"""Processing records as the doors read them: the newest, one, its raw message, counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crmdrop.store.accounts import StoreError, get_account
from crmdrop.store.models import Delivery, Note
from crmdrop.store.serialize import NOTE_TEXTS, delivery_json


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
    """One processing record with its whole decision (the note's texts read back from the
    note it filed, when the record left them there)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise StoreError(f"no delivery #{delivery_id}")
    return delivery_json(delivery, full=True, note=_filed_note(session, delivery))


def _filed_note(session: Session, delivery: Delivery) -> Note | None:
    """The note whose texts the delivery's record left out (`serialize.recorded_plan`)."""
    draft = (delivery.plan or {}).get("note")
    if not isinstance(draft, dict) or all(k in draft for k in NOTE_TEXTS):
        return None
    if delivery.note_id is None:
        return None
    return session.get(Note, delivery.note_id)


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
