"""Signing in and out, and who the request is from.

`current_user` is the dependency every page uses: a `SessionUser` (a frozen dataclass from
`crmdrop.store.users`) or a redirect to /login. `require_admin` is the same for admin pages;
a member gets 404 there (as for any URL that is not theirs). Sessions live in a signed cookie
(Starlette's SessionMiddleware, see `app.py`): user id, session epoch, CSRF token.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from crmdrop.passwords import verify_password
from crmdrop.store import users
from crmdrop.store.users import Credentials, SessionUser
from crmdrop.web.common import LoginRequired, NotFound, database, flash, redirect, render

router = APIRouter()

HOME = "/contacts"
LOGIN_FAILED = "Wrong email or password."


def current_user(request: Request) -> SessionUser:
    """The signed-in user, or LoginRequired (→ 303 /login). Also kept on `request.state`."""
    cached: SessionUser | None = getattr(request.state, "user", None)
    if cached is not None:
        return cached
    uid, epoch = request.session.get("uid"), request.session.get("epoch")
    if not isinstance(uid, int) or not isinstance(epoch, int):
        raise LoginRequired()
    with database(request).reading() as session:
        user = users.session_user(session, uid, epoch)
    if user is None:
        request.session.clear()
        raise LoginRequired()
    request.state.user = user
    return user


def optional_user(request: Request) -> SessionUser | None:
    """The signed-in user if there is one (error pages keep the navigation)."""
    try:
        return current_user(request)
    except LoginRequired:
        return None


def require_admin(user: Annotated[SessionUser, Depends(current_user)]) -> SessionUser:
    """An admin of the account; anyone else gets 404 (a page they cannot see does not exist)."""
    if not user.is_admin:
        raise NotFound()
    return user


CurrentUser = Annotated[SessionUser, Depends(current_user)]
AdminUser = Annotated[SessionUser, Depends(require_admin)]


def start_session(request: Request, user_id: int, epoch: int) -> None:
    """A fresh session (a new CSRF token too: no fixation of the anonymous one)."""
    request.session.clear()
    request.session.update({"uid": user_id, "epoch": epoch, "csrf": secrets.token_urlsafe(32)})


def safe_next(target: str | None) -> str:
    """Only a local path: a login link must not send anyone off-site."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return HOME


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if isinstance(request.session.get("uid"), int):
        try:
            current_user(request)
            return redirect(safe_next(next))
        except LoginRequired:
            pass
    return render(request, "login.html", next=safe_next(next), email="")


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = HOME,
) -> Response:
    db = database(request)

    def lookup() -> Credentials | None:
        with db.reading() as session:
            return users.credentials(session, email)

    creds = await run_in_threadpool(lookup)
    ok = await asyncio.to_thread(verify_password, creds.password_hash if creds else None, password)
    if creds is None or not ok or not creds.active:
        return render(
            request, "login.html", status_code=401, error=LOGIN_FAILED, email=email, next=next
        )
    start_session(request, creds.user_id, creds.epoch)
    return redirect(safe_next(next))


@router.post("/logout")
def logout(request: Request) -> Response:
    request.session.clear()
    flash(request, "You are signed out.")
    return redirect("/login")
