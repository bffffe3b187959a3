"""What every page-facing store function shares: account scoping and keyset cursors.

An object of another account is *not found*, exactly like one that never existed, so
the web pages and the API can answer 404 and an id leaks nothing (SPEC §7.3).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from crmdrop.store.accounts import StoreError

T = TypeVar("T")


class NotFound(StoreError):
    """No such object in the caller's account (it may exist in another: we do not say)."""


def owned(session: Session, model: type[T], object_id: int, account_id: int, what: str) -> T:
    """The row of `model` with this id if it belongs to the account, else NotFound."""
    row: Any = session.get(model, object_id)
    if row is None or row.account_id != account_id:
        raise NotFound(f"no {what} #{object_id}")
    result: T = row
    return result


def encode_cursor(when: datetime, row_id: int) -> str:
    """An opaque "after this row" mark for keyset pagination (newest first)."""
    return base64.urlsafe_b64encode(f"{when.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (time, id) a cursor stands for; a mangled one is the caller's mistake."""
    try:
        when, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(when), int(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError("that page link is not valid any more") from exc
