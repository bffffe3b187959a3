"""`/notes` (by contact, company, case or opportunity), a note, its original, attachments."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from crmdrop.store import activity, cases, companies, contacts, records, timeline
from crmdrop.web.api.common import (
    MAX_ID,
    ApiError,
    CallerDep,
    Cursor,
    IdPath,
    Page,
    file_response,
    reading,
)

router = APIRouter(tags=["notes"])
Filter = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@router.get(
    "/notes",
    summary="The notes of one contact, company, case or opportunity, newest first",
    description="Give exactly one of contact, company, case (its number) or opportunity.",
)
def list_notes(
    request: Request,
    caller: CallerDep,
    contact: Filter = None,
    company: Filter = None,
    case: Filter = None,
    opportunity: Filter = None,
    cursor: Cursor = None,
) -> Page[timeline.TimelineNote]:
    filters = {"contact": contact, "company": company, "case": case, "opportunity": opportunity}
    given = {k: v for k, v in filters.items() if v is not None}
    if len(given) != 1:
        raise ApiError(422, "give exactly one of: contact, company, case, opportunity")
    (what, ref), account = next(iter(given.items())), caller.account_id
    with reading(request) as session:
        if what == "contact":
            found = contacts.get_contact(session, account, ref, after=cursor).timeline
        elif what == "company":
            found = companies.get_company(session, account, ref, after=cursor).timeline
        else:
            kind = records.CASES if what == "case" else records.OPPORTUNITIES
            found = cases.get_record(session, account, kind, ref, after=cursor).timeline
    return Page[timeline.TimelineNote](items=found.notes, next_cursor=found.next_cursor)


@router.get("/notes/{note_id}", summary="One note")
def get_note(request: Request, caller: CallerDep, note_id: IdPath) -> timeline.TimelineNote:
    with reading(request) as session:
        return timeline.get_note(session, caller.account_id, note_id)


RAW: dict[int | str, dict[str, Any]] = {
    200: {"content": {"message/rfc822": {}}, "description": "The email as received"}
}
FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The file"}
}


@router.get(
    "/notes/{note_id}/raw",
    summary="The note's original email (.eml)",
    response_class=Response,
    responses=RAW,
)
def note_raw(request: Request, caller: CallerDep, note_id: IdPath) -> Response:
    with reading(request) as session:
        return file_response(activity.note_original(session, caller.account_id, note_id))


@router.get(
    "/attachments/{attachment_id}",
    summary="An attachment of a note",
    response_class=Response,
    responses=FILE,
)
def attachment(request: Request, caller: CallerDep, attachment_id: IdPath) -> Response:
    with reading(request) as session:
        return file_response(activity.attachment_file(session, caller.account_id, attachment_id))
