"""What every page module shares: templates, the database, flash messages, CSRF, errors.

Pages read and write only through `crmdrop.store` functions, in a `db.reading()` or
`db.writing()` transaction taken from `database(request)`; no SQL here.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.store.accounts import Missing, StoreError
from crmdrop.store.db import Database
from crmdrop.store.users import SessionUser

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """No valid session: a page answers with a redirect to /login."""


class CsrfFailed(Exception):
    """A state-changing request without the session's CSRF token: 403, nothing changed."""


class NotFound(Exception):
    """Nothing here for this user (also: another account's object): 404."""


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (anonymous sessions have one too)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def check_csrf(request: Request) -> None:
    """Router dependency: a POST (PUT, PATCH, DELETE) must carry the session's token, in the
    form field `csrf_token` or the `X-CSRF-Token` header (htmx sends that)."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfFailed()


def flash(request: Request, message: str, category: str = "info") -> None:
    """A message shown once, on the next page rendered for this session."""
    request.session.setdefault("flash", []).append([category, message])


@contextmanager
def store_change(
    request: Request, done: str | None = None, *, missing_is_404: bool = False
) -> Iterator[Session]:
    """A write transaction for one form. A store refusal (`StoreError`) rolls it back and is
    flashed as an error (nothing changed); `done` is flashed on success. With
    `missing_is_404`, an object that is not there (`Missing`) is a 404 instead."""
    try:
        with database(request).writing() as session:
            yield session
    except Missing as exc:
        if missing_is_404:
            raise NotFound() from exc
        flash(request, _sentence(str(exc)), "error")
        return
    except StoreError as exc:
        flash(request, _sentence(str(exc)), "error")
        return
    if done:
        flash(request, done, "success")


def _sentence(message: str) -> str:
    """A store message as a sentence on the page (it may start with an address: no capital)."""
    return message if message.endswith((".", "!", "?")) else message + "."


def redirect(url: str) -> RedirectResponse:
    """After a POST: 303 See Other, so the browser GETs the next page."""
    return RedirectResponse(url, status_code=303)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    """A template with what the layout needs: user, CSRF token, flash messages."""
    user: SessionUser | None = getattr(request.state, "user", None)
    messages = request.session.pop("flash", [])
    return templates.TemplateResponse(
        request,
        name,
        {"user": user, "csrf_token": csrf_token(request), "messages": messages, **context},
        status_code=status_code,
    )
