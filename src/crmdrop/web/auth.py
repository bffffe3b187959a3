"""Signing in and out, and who the request is from.

`current_user` is the dependency every page uses: a `SessionUser` (a frozen dataclass from
`crmdrop.store.users`) or a redirect to /login. `require_admin` is the same for admin pages;
a member gets 404 there (as for any URL that is not theirs). Sessions live in a signed cookie
(Starlette's SessionMiddleware, see `app.py`): user id, session epoch, CSRF token.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from crmdrop.mail.addresses import normalize_address
from crmdrop.outbound.account_mail import send_password_reset
from crmdrop.passwords import hash_password, password_problem, verify_password
from crmdrop.store import throttle, users
from crmdrop.store.accounts import StoreError, now
from crmdrop.store.models import TokenKind
from crmdrop.store.users import Credentials, SessionUser
from crmdrop.web.common import (
    LoginRequired,
    NotFound,
    database,
    flash,
    redirect,
    render,
    settings_of,
)

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


SLOW_AFTER = 3  # failures before each further attempt is answered late
THROTTLED = (
    "Too many failed sign-ins for this account or from your network: sign-in is refused "
    "for {minutes} minutes. Try again later, or reset your password."
)


@dataclass(frozen=True)
class Throttle:
    """How many recent failures the two keys of an attempt (IP, account) have had."""

    keys: list[str]
    counts: dict[str, int]
    refused: bool

    @property
    def delay(self) -> float:
        """Seconds to wait before answering: grows with the failures, at most 5."""
        worst = max(self.counts.values(), default=0)
        return float(min(max(worst - SLOW_AFTER + 1, 0), 5))


def _throttle(request: Request, email: str) -> Throttle:
    settings = settings_of(request)
    ip = request.client.host if request.client else "unknown"
    keys = [f"ip:{ip}", f"user:{normalize_address(email)}"]
    since = now() - timedelta(minutes=settings.login_lockout_minutes)
    with database(request).reading() as session:
        counts = throttle.failures_since(session, keys, since)
    refused = (
        counts[keys[0]] >= settings.login_max_failures_ip
        or counts[keys[1]] >= settings.login_max_failures
    )
    return Throttle(keys, counts, refused)


def _record_outcome(request: Request, limit: Throttle, ok: bool) -> None:
    settings = settings_of(request)
    with database(request).writing() as session:
        if ok:
            throttle.clear_failures(session, limit.keys[1])
            return
        at = now()
        window = timedelta(minutes=settings.login_lockout_minutes)
        throttle.record_failure(session, limit.keys, at, prune_before=at - window)


@router.post("/login")
async def login(
    request: Request,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = HOME,
) -> Response:
    """Unknown email, wrong password and inactive user read the same; repeated failures
    are answered slower, then refused for a while (per IP and per account)."""
    limit = await run_in_threadpool(_throttle, request, email)
    if limit.refused:
        message = THROTTLED.format(minutes=settings_of(request).login_lockout_minutes)
        return render(request, "login.html", status_code=429, error=message, email=email, next=next)
    await asyncio.sleep(limit.delay)
    db = database(request)

    def lookup() -> Credentials | None:
        with db.reading() as session:
            return users.credentials(session, email)

    creds = await run_in_threadpool(lookup)
    ok = await asyncio.to_thread(verify_password, creds.password_hash if creds else None, password)
    ok = ok and creds is not None and creds.active
    await run_in_threadpool(_record_outcome, request, limit, ok)
    if not ok or creds is None:
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


RESET_SENT = (
    "If that address belongs to an account, a link to reset its password is on its way. "
    "It works once, for an hour."
)


@router.get("/password/reset")
def reset_request_form(request: Request) -> Response:
    return render(request, "password_reset.html")


@router.post("/password/reset")
def reset_request(request: Request, email: Annotated[str, Form()] = "") -> Response:
    """The same answer whether or not the address has an account (nothing leaks)."""
    with database(request).writing() as session:
        send_password_reset(session, settings_of(request), email)
    flash(request, RESET_SENT)
    return redirect("/login")


def _new_password(password: str, confirm: str) -> str | None:
    """Why the two fields are refused, or None."""
    if password != confirm:
        return "The two passwords differ."
    return password_problem(password)


@router.get("/password/reset/{token}")
def reset_form(request: Request, token: str) -> Response:
    with database(request).reading() as session:
        live = users.peek_token(session, token, TokenKind.RESET) is not None
    if not live:
        return render(request, "error.html", 410, title="Link expired", message=users.LINK_INVALID)
    return render(request, "set_password.html", action=f"/password/reset/{token}", invite=None)


@router.post("/password/reset/{token}")
async def reset_password(
    request: Request,
    token: str,
    password: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    problem = _new_password(password, confirm)
    if problem:
        return render(
            request, "set_password.html", 400, action=f"/password/reset/{token}",
            invite=None, error=problem,
        )  # fmt: skip
    hashed = await asyncio.to_thread(hash_password, password)

    def store() -> None:
        with database(request).writing() as session:
            users.reset_password(session, token, hashed)

    try:
        await run_in_threadpool(store)
    except StoreError as exc:
        return render(request, "error.html", 410, title="Link expired", message=str(exc))
    request.session.clear()
    flash(request, "Your password is changed. Sign in with it.")
    return redirect("/login")


@router.get("/invite/{token}")
def invite_form(request: Request, token: str) -> Response:
    with database(request).reading() as session:
        found = users.peek_token(session, token, TokenKind.INVITE)
        invited = users.invited_user(session, found.user_id) if found else None
    if invited is None:
        return render(request, "error.html", 410, title="Link expired", message=users.LINK_INVALID)
    return render(request, "set_password.html", action=f"/invite/{token}", invite=invited)


@router.post("/invite/{token}")
async def accept_invite(
    request: Request,
    token: str,
    password: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    problem = _new_password(password, confirm)
    if problem:
        flash(request, problem, "error")
        return redirect(f"/invite/{token}")
    hashed = await asyncio.to_thread(hash_password, password)

    def store() -> tuple[int, int]:
        with database(request).writing() as session:
            user = users.accept_invite(session, token, hashed)
            return user.id, user.session_epoch

    try:
        user_id, epoch = await run_in_threadpool(store)
    except StoreError as exc:
        return render(request, "error.html", 410, title="Link expired", message=str(exc))
    start_session(request, user_id, epoch)
    flash(request, "Welcome! Your six dropbox addresses are live.", "success")
    return redirect("/settings/dropbox")
