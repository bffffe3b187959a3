"""`/me`: the token's user and their six dropbox addresses; regenerate them (SPEC §2.3)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from crmdrop.dropbox.address import dropbox_addresses
from crmdrop.store import accounts, users
from crmdrop.web.api.common import CallerDep, reading, settings_of, writing

router = APIRouter(tags=["me"])


class Me(BaseModel):
    id: int
    email: str
    name: str
    role: str
    account: str
    timezone: str
    dropbox: dict[str, str]


def _me(caller: CallerDep, token: str, domain: str) -> Me:
    user = caller.user
    return Me(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role.value,
        account=user.account_name,
        timezone=user.timezone,
        dropbox={k.value: v for k, v in dropbox_addresses(token, domain).items()},
    )


@router.get("/me", summary="The token's user and their six dropbox addresses")
def get_me(request: Request, caller: CallerDep) -> Me:
    with reading(request) as session:
        token = users.dropbox_settings(session, caller.user.id).token
    return _me(caller, token, settings_of(request).domain)


@router.post(
    "/me/dropbox/regenerate",
    summary="A new dropbox token: the six old addresses stop working at once",
)
def regenerate(request: Request, caller: CallerDep) -> Me:
    with writing(request) as session:
        token = accounts.regenerate_token(session, caller.user.email).token
    return _me(caller, token, settings_of(request).domain)
