"""`/cases` and `/opportunities`, by their number (CA12 is case 12)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from crmdrop.store import cases
from crmdrop.store.records import CASES, OPPORTUNITIES, RecordKind
from crmdrop.web.api.common import CallerDep, Cursor, IdPath, Page, reading, writing

router = APIRouter()
Status = Annotated[str | None, Query(max_length=32, description="Only records of this status")]


class RecordPatch(BaseModel):
    """Only the fields sent change."""

    title: str | None = Field(None, min_length=1, max_length=2000)
    status: str | None = Field(None, max_length=32)


def _routes(kind: RecordKind, path: str, tag: str) -> None:
    @router.get(f"/{path}", tags=[tag], summary=f"The account's {path}, newest first")
    def list_them(
        request: Request, caller: CallerDep, status: Status = None
    ) -> Page[cases.RecordRow]:
        with reading(request) as session:
            rows = cases.list_records_by_status(session, caller.account_id, kind, status)
        return Page[cases.RecordRow](items=rows)

    @router.get(f"/{path}/{{number}}", tags=[tag], summary=f"One {kind.name} by number")
    def get_one(
        request: Request, caller: CallerDep, number: IdPath, cursor: Cursor = None
    ) -> cases.RecordDetail:
        with reading(request) as session:
            return cases.get_record(session, caller.account_id, kind, number, after=cursor)

    @router.patch(f"/{path}/{{number}}", tags=[tag], summary=f"Retitle a {kind.name} or set status")
    def update(
        request: Request, caller: CallerDep, number: IdPath, body: RecordPatch
    ) -> cases.RecordRow:
        with writing(request) as session:
            have = cases.get_record(session, caller.account_id, kind, number)
            return cases.edit_record(
                session,
                caller.account_id,
                kind,
                number,
                title=body.title if body.title is not None else have.title,
                status=body.status if body.status is not None else have.status,
            )


_routes(CASES, "cases", "cases")
_routes(OPPORTUNITIES, "opportunities", "opportunities")
