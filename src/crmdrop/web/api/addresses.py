"""`/addresses`: the user's additional addresses, which count as theirs (SPEC §1.2)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from crmdrop.store import accounts, users
from crmdrop.web.api.common import CallerDep, Page, reading, writing

router = APIRouter(tags=["addresses"])


class Address(BaseModel):
    email: str
    verified: bool


class NewAddress(BaseModel):
    email: str = Field(max_length=320)


@router.get("/addresses", summary="The user's additional addresses")
def list_addresses(request: Request, caller: CallerDep) -> Page[Address]:
    with reading(request) as session:
        rows = users.dropbox_settings(session, caller.user.id).addresses
    return Page[Address](items=[Address(email=a.email, verified=a.verified) for a in rows])


@router.post("/addresses", status_code=201, summary="Add an address that counts as the user's")
def add_address(request: Request, caller: CallerDep, body: NewAddress) -> Address:
    with writing(request) as session:
        added = accounts.add_user_address(session, caller.user.email, body.email)
        return Address(email=added.email, verified=added.verified)
