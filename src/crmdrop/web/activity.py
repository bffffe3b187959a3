"""Activity: every delivery to the user's dropboxes, and a delivery's page — the whole
processing record, with the actions that put a wrong decision right (each recorded)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from crmdrop.store import deliveries as store
from crmdrop.web.auth import CurrentUser
from crmdrop.web.common import database, flash, redirect, render
from crmdrop.web.contacts import download
from crmdrop.web.crm import attempt

router = APIRouter()

FILTERS = ("filed", "duplicate", "no_contact", "rejected", "failed", "queued", "undone")


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/activity")
def activity(
    request: Request, user: CurrentUser, status: str | None = None, after: int | None = None
) -> Response:
    with database(request).reading() as session:
        page = store.list_activity(session, user.id, status=status or None, after=after)
    return render(
        request, "activity/list.html", page=page, status=status, filters=FILTERS, after=after
    )


@router.get("/activity/{delivery_id}")
def delivery_page(request: Request, user: CurrentUser, delivery_id: int) -> Response:
    with database(request).reading() as session:
        record = store.get_delivery(session, user.account_id, delivery_id)
    offer = request.session.pop("offer_delete", None)
    return render(request, "activity/show.html", d=record, offer=offer)


@router.get("/activity/{delivery_id}/raw")
def delivery_raw(request: Request, user: CurrentUser, delivery_id: int) -> Response:
    with database(request).reading() as session:
        data = store.raw_message(session, user.account_id, delivery_id)
    return download(data)


@router.post("/activity/{delivery_id}/undo")
def delivery_undo(request: Request, user: CurrentUser, delivery_id: int) -> Response:
    def action(session: Session) -> str:
        result = store.undo_filing(session, user.account_id, user.id, delivery_id, now=_now())
        kept = f" Kept (still used elsewhere): {', '.join(result.kept)}." if result.kept else ""
        return f"Filing undone: removed {', '.join(result.removed) or 'nothing'}.{kept}"

    return attempt(request, f"/activity/{delivery_id}", action)


@router.post("/activity/{delivery_id}/retry")
def delivery_retry(request: Request, user: CurrentUser, delivery_id: int) -> Response:
    def action(session: Session) -> str:
        store.retry_delivery(session, user.account_id, user.id, delivery_id, now=_now())
        return "Queued again: it is filed in a moment (reload to see)."

    return attempt(request, f"/activity/{delivery_id}", action)


@router.post("/activity/{delivery_id}/never")
def delivery_never(
    request: Request,
    user: CurrentUser,
    delivery_id: int,
    address: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "address",
) -> Response:
    if not user.is_admin:  # the exclusion list is the account's: admins edit it
        flash(request, "Only an admin of the account can change its exclusion list.", "error")
        return redirect(f"/activity/{delivery_id}")

    def action(session: Session) -> str:
        result = store.never_contact(
            session, user.account_id, user.id, delivery_id, address,
            whole_domain=scope == "domain", now=_now(),
        )  # fmt: skip
        if result.deletable is not None:
            request.session["offer_delete"] = [result.deletable.id, result.deletable.label]
        return f"{result.pattern} is on the exclusion list: it never becomes a contact again."

    return attempt(request, f"/activity/{delivery_id}", action)


@router.post("/activity/{delivery_id}/delete-contact")
def delivery_delete_contact(
    request: Request, user: CurrentUser, delivery_id: int, contact_id: Annotated[int, Form()]
) -> Response:
    def action(session: Session) -> str:
        store.delete_created_contact(
            session, user.account_id, user.id, delivery_id, contact_id, now=_now()
        )
        return "Contact deleted."

    return attempt(request, f"/activity/{delivery_id}", action)
