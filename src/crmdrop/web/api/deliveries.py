"""`/deliveries`: the processing records of the user's dropboxes; retry and undo."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from crmdrop.store import activity
from crmdrop.web.api.common import (
    MAX_ID,
    CallerDep,
    IdPath,
    Page,
    file_response,
    now,
    reading,
    writing,
)
from crmdrop.web.api.notes import RAW

router = APIRouter(tags=["deliveries"])
After = Annotated[
    int | None,
    Query(alias="cursor", ge=1, le=MAX_ID, description="The `next_cursor` of the last page"),
]
Status = Annotated[str | None, Query(max_length=32, description="Only this status")]


@router.get("/deliveries", summary="Deliveries to the user's dropboxes, newest first")
def list_deliveries(
    request: Request, caller: CallerDep, status: Status = None, after: After = None
) -> Page[activity.ActivityRow]:
    with reading(request) as session:
        page = activity.list_activity(session, caller.user.id, status=status, after=after)
    cursor = str(page.next_after) if page.next_after is not None else None
    return Page[activity.ActivityRow](items=page.rows, next_cursor=cursor)


@router.get("/deliveries/{delivery_id}", summary="A delivery's processing record")
def get_delivery(
    request: Request, caller: CallerDep, delivery_id: IdPath
) -> activity.DeliveryDetail:
    with reading(request) as session:
        return activity.get_delivery(session, caller.account_id, delivery_id)


@router.get(
    "/deliveries/{delivery_id}/raw",
    summary="The message as received (.eml)",
    response_class=Response,
    responses=RAW,
)
def delivery_raw(request: Request, caller: CallerDep, delivery_id: IdPath) -> Response:
    with reading(request) as session:
        return file_response(activity.raw_message_file(session, caller.account_id, delivery_id))


@router.post(
    "/deliveries/{delivery_id}/retry",
    status_code=202,
    summary="File a failed, undone or unfiled delivery again",
)
def retry(request: Request, caller: CallerDep, delivery_id: IdPath) -> activity.DeliveryDetail:
    with writing(request) as session:
        activity.retry_delivery(session, caller.account_id, caller.user.id, delivery_id, now=now())
        return activity.get_delivery(session, caller.account_id, delivery_id)


@router.post(
    "/deliveries/{delivery_id}/undo",
    summary="Take a filing back: its note and what it created (unless used since)",
)
def undo(request: Request, caller: CallerDep, delivery_id: IdPath) -> activity.UndoResult:
    with writing(request) as session:
        return activity.undo_filing(
            session, caller.account_id, caller.user.id, delivery_id, now=now()
        )
