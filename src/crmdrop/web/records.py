"""Cases, opportunities (lists by status, a page per reference, edit title and status)
and the user's tasks (grouped by due date in their time zone; complete, reopen)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from crmdrop.store.cases import (
    CASES,
    OPPORTUNITIES,
    edit_record,
    get_record,
    list_records_by_status,
    statuses,
)
from crmdrop.store.records import RecordKind
from crmdrop.store.tasks import set_task_done, task_board
from crmdrop.web.auth import CurrentUser
from crmdrop.web.common import NotFound, database, render
from crmdrop.web.crm import attempt

router = APIRouter()

KINDS = {"cases": CASES, "opportunities": OPPORTUNITIES}


def _area(request: Request) -> tuple[str, RecordKind]:
    """`cases` or `opportunities`, from the path (one route function serves both)."""
    area = request.url.path.split("/")[1]
    return area, KINDS[area]


@router.get("/cases")
@router.get("/opportunities")
def records_list(request: Request, user: CurrentUser, status: str | None = None) -> Response:
    area, kind = _area(request)
    with database(request).reading() as session:
        rows = list_records_by_status(session, user.account_id, kind, status or None)
    return render(
        request, "records/list.html", rows=rows, kind=kind, area=area, status=status,
        statuses=statuses(kind),
    )  # fmt: skip


@router.get("/cases/{number}")
@router.get("/opportunities/{number}")
def record_page(
    request: Request, user: CurrentUser, number: int, after: str | None = None
) -> Response:
    area, kind = _area(request)
    with database(request).reading() as session:
        record = get_record(session, user.account_id, kind, number, after=after)
    return render(request, "records/show.html", record=record, kind=kind, area=area)


@router.post("/cases/{number}")
@router.post("/opportunities/{number}")
def record_edit(
    request: Request,
    user: CurrentUser,
    number: int,
    title: Annotated[str, Form()] = "",
    status: Annotated[str, Form()] = "",
) -> Response:
    area, kind = _area(request)

    def action(session: Session) -> str:
        row = edit_record(session, user.account_id, kind, number, title=title, status=status)
        return f"Saved {row.ref} ({row.status})."

    return attempt(request, f"/{area}/{number}", action)


@router.get("/tasks")
def tasks_page(request: Request, user: CurrentUser) -> Response:
    with database(request).reading() as session:
        board = task_board(session, user.id, now=datetime.now(UTC))
    return render(request, "records/tasks.html", board=board)


@router.post("/tasks/{task_id}/{change}")
def task_change(request: Request, user: CurrentUser, task_id: int, change: str) -> Response:
    if change not in ("done", "reopen"):
        raise NotFound()

    def action(session: Session) -> str:
        task = set_task_done(session, user.account_id, task_id, change == "done")
        return f"{task.title!r} {'completed' if task.done else 'reopened'}."

    return attempt(request, "/tasks", action)
