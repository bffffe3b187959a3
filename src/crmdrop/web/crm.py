"""What the CRM pages (contacts, companies, records, activity) share: a store action
run in one write transaction that flashes its outcome, and the date filters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from crmdrop.store.accounts import StoreError
from crmdrop.store.scope import NotFound as StoreNotFound
from crmdrop.store.users import SessionUser
from crmdrop.web.common import database, flash, redirect, templates


def attempt(
    request: Request, back: str, action: Callable[[Session], str], *, done: str | None = None
) -> Response:
    """Run `action` in a write transaction; flash what it says (or why it was refused,
    which changes nothing) and go to `done` (else back). Another account's object: 404."""
    try:
        with database(request).writing() as session:
            message = action(session)
    except StoreNotFound:
        raise  # 404 (app.py), before the StoreError it also is
    except StoreError as exc:
        flash(request, str(exc), "error")
        return redirect(back)
    flash(request, message, "success")
    return redirect(done or back)


def local(value: datetime | None, user: SessionUser | None) -> str:
    """A time in the signed-in user's time zone, as a person reads it."""
    if value is None:
        return ""
    zone = ZoneInfo(user.timezone) if user else ZoneInfo("UTC")
    return value.astimezone(zone).strftime("%d %b %Y, %H:%M")


def day(value: date | None) -> str:
    return value.strftime("%a %d %b %Y") if value else "no date"


def size(value: int) -> str:
    if value < 1024:
        return f"{value} bytes"
    kb = value / 1024
    return f"{kb:.1f} KB" if kb < 1024 else f"{kb / 1024:.1f} MB"


templates.env.filters["day"] = day
templates.env.filters["size"] = size
templates.env.globals["local"] = local
