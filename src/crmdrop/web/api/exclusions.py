"""`/exclusions`: the account's exclusion list, addresses and @domains (SPEC §1.3)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from crmdrop.store import accounts
from crmdrop.web.api.common import CallerDep, Page, admin_only, reading, writing

router = APIRouter(tags=["exclusions"])


class Exclusion(BaseModel):
    pattern: str = Field(description="An exact address, or @domain for a whole domain")


@router.get("/exclusions", summary="The account's exclusion list")
def list_exclusions(request: Request, caller: CallerDep) -> Page[Exclusion]:
    with reading(request) as session:
        rows = accounts.exclusions(session, caller.user.account_name)
    return Page[Exclusion](items=[Exclusion(pattern=p) for p in rows])


@router.post("/exclusions", status_code=201, summary="Exclude an address or @domain (admin)")
def add_exclusion(request: Request, caller: CallerDep, body: Exclusion) -> Exclusion:
    admin_only(caller)
    with writing(request) as session:
        entry = accounts.add_exclusion(session, caller.user.account_name, body.pattern)
        return Exclusion(pattern=entry.pattern)
