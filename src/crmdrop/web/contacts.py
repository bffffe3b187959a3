"""Contacts: the list (search, last activity, pages), a contact's page with its timeline,
edit, delete, merge; a note's original email and attachments (downloads)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from crmdrop.store import contacts as store
from crmdrop.store.companies import list_companies
from crmdrop.store.deliveries import FileData, attachment_file, note_original
from crmdrop.web.auth import CurrentUser
from crmdrop.web.common import database, render
from crmdrop.web.crm import attempt

router = APIRouter()


@router.get("/contacts")
def contacts_list(
    request: Request, user: CurrentUser, q: str = "", after: str | None = None
) -> Response:
    with database(request).reading() as session:
        page = store.list_contacts(session, user.account_id, search=q, after=after)
    return render(request, "contacts/list.html", page=page, q=q, after=after)


@router.get("/contacts/{contact_id}")
def contact_page(
    request: Request, user: CurrentUser, contact_id: int, after: str | None = None
) -> Response:
    with database(request).reading() as session:
        contact = store.get_contact(session, user.account_id, contact_id, after=after)
        companies = list_companies(session, user.account_id)
    return render(request, "contacts/show.html", contact=contact, companies=companies)


@router.post("/contacts/{contact_id}/edit")
def contact_edit(
    request: Request,
    user: CurrentUser,
    contact_id: int,
    name: Annotated[str, Form()] = "",
    emails: Annotated[str, Form()] = "",
    company_id: Annotated[str, Form()] = "",
) -> Response:
    edit = store.ContactEdit(
        name=name,
        emails=emails.replace(",", "\n").splitlines(),
        company_id=int(company_id) if company_id.isdigit() else None,
    )

    def action(session: Session) -> str:
        row = store.update_contact(session, user.account_id, contact_id, edit)
        return f"Saved {row.name}."

    return attempt(request, f"/contacts/{contact_id}", action)


@router.post("/contacts/{contact_id}/delete")
def contact_delete(request: Request, user: CurrentUser, contact_id: int) -> Response:
    def action(session: Session) -> str:
        store.delete_contact(session, user.account_id, contact_id)
        return "Contact deleted. Its notes stay in the activity and on their other contacts."

    return attempt(request, f"/contacts/{contact_id}", action, done="/contacts")


@router.post("/contacts/{contact_id}/merge")
def contact_merge(
    request: Request, user: CurrentUser, contact_id: int, other: Annotated[str, Form()] = ""
) -> Response:
    def action(session: Session) -> str:
        other_id = (
            int(other)
            if other.isdigit()
            else store.contact_by_address(session, user.account_id, other)
        )
        row = store.merge_contacts(session, user.account_id, contact_id, other_id)
        return f"Merged into {row.name}: every note and address is kept here."

    return attempt(request, f"/contacts/{contact_id}", action)


def download(data: FileData) -> Response:
    """Bytes as a download: never rendered by the browser as a page of ours."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in data.filename
    )
    return Response(
        data.data,
        media_type=data.content_type,
        headers={
            "Content-Disposition": (
                f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(data.filename)}"
            ),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.get("/notes/{note_id}/original")
def note_eml(request: Request, user: CurrentUser, note_id: int) -> Response:
    """The note's email as received: the `.eml` to open in a mail program."""
    with database(request).reading() as session:
        data = note_original(session, user.account_id, note_id)
    return download(data)


@router.get("/attachments/{attachment_id}")
def attachment(request: Request, user: CurrentUser, attachment_id: int) -> Response:
    with database(request).reading() as session:
        data = attachment_file(session, user.account_id, attachment_id)
    return download(data)
