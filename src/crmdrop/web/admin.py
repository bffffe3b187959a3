"""Admin pages: the account's users (invite, deactivate, make admin) and the service status.

Only admins reach them (`require_admin`: anyone else gets 404); a user id of another
account is 404 too (`store.users.account_user` raises `Missing`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from crmdrop.outbound.account_mail import send_invite
from crmdrop.store import users
from crmdrop.store.inbound import queue_counts
from crmdrop.store.models import Role
from crmdrop.web.auth import AdminUser
from crmdrop.web.common import (
    NotFound,
    database,
    flash,
    redirect,
    render,
    settings_of,
    store_change,
)

router = APIRouter(prefix="/admin")

USERS = "/admin/users"


@router.get("")
def admin_home() -> Response:
    return redirect(USERS)


@router.get("/users")
def users_page(request: Request, user: AdminUser) -> Response:
    with database(request).reading() as session:
        rows = users.list_users(session, user.account_id)
    return render(request, "admin/users.html", rows=rows)


@router.post("/users/invite")
def invite(
    request: Request,
    user: AdminUser,
    email: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    """A colleague is added (inactive) and mailed the link to set their password."""
    done = f"Invited {email.strip()}: they get a link to set their password."
    with store_change(request, done) as s:
        invited = users.invite_user(s, user.account_id, email, name.strip())
        send_invite(s, settings_of(request), invited, inviter=user.name or user.email)
    return redirect(USERS)


def _change_user(request: Request, admin: AdminUser, user_id: int, what: str) -> Response:
    """Deactivate, reactivate, or set the role of a user of the admin's account."""
    with store_change(request, missing_is_404=True) as s:
        if what in ("deactivate", "activate"):
            target = users.set_active(s, admin.account_id, user_id, what == "activate", by=admin.id)
        else:
            target = users.set_role(s, admin.account_id, user_id, Role(what), by=admin.id)
        flash(request, f"{target.email} {_DONE[what]}", "success")
    return redirect(USERS)


_DONE = {
    "deactivate": "is deactivated: their sessions ended and their dropbox refuses mail.",
    "activate": "is active again.",
    "admin": "is now an admin.",
    "member": "is now a member.",
}


@router.post("/users/{user_id}/deactivate")
def deactivate(request: Request, user: AdminUser, user_id: int) -> Response:
    return _change_user(request, user, user_id, "deactivate")


@router.post("/users/{user_id}/activate")
def activate(request: Request, user: AdminUser, user_id: int) -> Response:
    return _change_user(request, user, user_id, "activate")


@router.post("/users/{user_id}/role")
def role(
    request: Request, user: AdminUser, user_id: int, role: Annotated[str, Form()] = ""
) -> Response:
    if role not in (Role.ADMIN, Role.MEMBER):
        raise NotFound()
    return _change_user(request, user, user_id, role)


@router.get("/status")
def status(request: Request, user: AdminUser) -> Response:
    """What `/` showed before there was a UI: the queue by status and where we listen."""
    with database(request).reading() as session:
        counts = queue_counts(session)
    return render(
        request, "admin/status.html", counts=sorted(counts.items()), settings=settings_of(request)
    )
