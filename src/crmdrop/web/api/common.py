"""What every API module shares: the caller (from a Bearer token), the database, problem
details (RFC 9457), pages. Routes call `crmdrop.store` functions only: no SQL here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.store.activity import FileData
from crmdrop.store.db import Database
from crmdrop.store.tokens import authenticate, touch_token
from crmdrop.store.users import SessionUser, session_user

PROBLEM_JSON = "application/problem+json"
T = TypeVar("T")


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="For 422: each invalid field, where it is and what is wrong."
    )


class ApiError(Exception):
    """Answer with a problem document: `status` and a `detail` meant for the caller."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `?cursor=` for the next one."""

    items: list[T]
    next_cursor: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@contextmanager
def reading(request: Request) -> Iterator[Session]:
    with database(request).reading() as session:
        yield session


@contextmanager
def writing(request: Request) -> Iterator[Session]:
    with database(request).writing() as session:
        yield session


bearer = HTTPBearer(auto_error=False, description="A personal API token (crmdrop tokens create)")


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's user (same account, same role) and the token."""

    user: SessionUser
    token_id: int

    @property
    def account_id(self) -> int:
        return self.user.account_id


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, {"WWW-Authenticate": 'Bearer realm="crmdrop"'})


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller of a request, from `Authorization: Bearer <token>`; 401 otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("send a personal API token as 'Authorization: Bearer <token>'")
    at = now()
    with reading(request) as session:
        found = authenticate(session, credentials.credentials, now=at)
        user = session_user(session, found.user_id, found.epoch) if found else None
    if found is None or user is None:
        raise _unauthorized("this API token is not valid (unknown, revoked, or its user is off)")
    if found.stale:
        with writing(request) as session:
            touch_token(session, found.token_id, now=at)
    request.state.token_id = found.token_id
    return Caller(user, found.token_id)


CallerDep = Annotated[Caller, Depends(current_caller)]


def admin_only(caller: Caller) -> None:
    if not caller.user.is_admin:
        raise ApiError(403, "only an admin of the account may do this")


MAX_ID = 2_147_483_647  # PostgreSQL's integer: a larger id is no id at all, not our error
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
Cursor = Annotated[
    str | None,
    Query(max_length=200, description="The `next_cursor` of the previous page"),
]


def file_response(data: FileData) -> Response:
    """A download: the bytes under the name and type the store gives them."""
    safe = data.filename.replace('"', "").replace("\\", "").replace("\r", "").replace("\n", "")
    return Response(
        data.data,
        media_type=data.content_type or "application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )
