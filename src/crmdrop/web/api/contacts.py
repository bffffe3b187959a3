"""`/contacts` and `/companies`: the same store functions as the contact pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from crmdrop.store import companies, contacts, records
from crmdrop.web.api.common import (
    MAX_ID,
    CallerDep,
    Cursor,
    IdPath,
    Page,
    now,
    reading,
    writing,
)

router = APIRouter()
Search = Annotated[str, Query(max_length=200, description="Name, address or company contains")]
EmailList = Annotated[list[Annotated[str, Field(max_length=320)]], Field(max_length=50)]


class ContactIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    emails: EmailList = Field(default_factory=list)
    company_id: int | None = Field(None, ge=1, le=MAX_ID)


class ContactPatch(BaseModel):
    """Only the fields sent change."""

    name: str | None = Field(None, min_length=1, max_length=200)
    emails: EmailList | None = None
    company_id: int | None = Field(None, ge=1, le=MAX_ID)


class MergeIn(BaseModel):
    other_id: int = Field(ge=1, le=MAX_ID, description="The contact merged into this one")


class CompanyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    domain: str | None = Field(None, max_length=255)
    emails: EmailList = Field(default_factory=list)


@router.get("/contacts", tags=["contacts"], summary="Contacts, most recent activity first")
def list_contacts(
    request: Request, caller: CallerDep, q: Search = "", cursor: Cursor = None
) -> Page[contacts.ContactRow]:
    with reading(request) as session:
        page = contacts.list_contacts(session, caller.account_id, search=q, after=cursor)
    return Page[contacts.ContactRow](items=page.rows, next_cursor=page.next_cursor)


@router.post("/contacts", tags=["contacts"], status_code=201, summary="Create a contact")
def create_contact(request: Request, caller: CallerDep, body: ContactIn) -> contacts.ContactRow:
    edit = contacts.ContactEdit(body.name, body.emails, body.company_id)
    with writing(request) as session:
        return contacts.create_contact(session, caller.account_id, edit, now=now())


@router.get("/contacts/{contact_id}", tags=["contacts"], summary="A contact and its timeline")
def get_contact(
    request: Request, caller: CallerDep, contact_id: IdPath, cursor: Cursor = None
) -> contacts.ContactDetail:
    with reading(request) as session:
        return contacts.get_contact(session, caller.account_id, contact_id, after=cursor)


@router.patch("/contacts/{contact_id}", tags=["contacts"], summary="Change a contact")
def update_contact(
    request: Request, caller: CallerDep, contact_id: IdPath, body: ContactPatch
) -> contacts.ContactRow:
    with writing(request) as session:
        have = contacts.get_contact(session, caller.account_id, contact_id)
        sent = body.model_fields_set
        edit = contacts.ContactEdit(
            body.name if body.name is not None else have.name,
            body.emails if body.emails is not None else have.emails,
            body.company_id
            if "company_id" in sent
            else (have.company.id if have.company else None),
        )
        return contacts.update_contact(session, caller.account_id, contact_id, edit)


@router.delete(
    "/contacts/{contact_id}", tags=["contacts"], status_code=204, summary="Delete a contact"
)
def delete_contact(request: Request, caller: CallerDep, contact_id: IdPath) -> Response:
    with writing(request) as session:
        contacts.delete_contact(session, caller.account_id, contact_id)
    return Response(status_code=204)


@router.post(
    "/contacts/{contact_id}/merge",
    tags=["contacts"],
    summary="Merge another contact into this one (it is gone afterwards)",
)
def merge_contact(
    request: Request, caller: CallerDep, contact_id: IdPath, body: MergeIn
) -> contacts.ContactRow:
    with writing(request) as session:
        return contacts.merge_contacts(session, caller.account_id, contact_id, body.other_id)


@router.get("/companies", tags=["companies"], summary="Companies")
def list_companies(
    request: Request, caller: CallerDep, q: Search = ""
) -> Page[companies.CompanyRow]:
    with reading(request) as session:
        rows = companies.list_companies(session, caller.account_id, search=q)
    return Page[companies.CompanyRow](items=rows)


@router.post("/companies", tags=["companies"], status_code=201, summary="Create a company")
def create_company(request: Request, caller: CallerDep, body: CompanyIn) -> companies.CompanyRow:
    with writing(request) as session:
        made = records.create_company(
            session,
            body.name,
            account=caller.user.account_name,
            domain=body.domain,
            emails=body.emails,
        )
        return companies.CompanyRow(made.id, made.name, made.domain, 0)


@router.get(
    "/companies/{company_id}", tags=["companies"], summary="A company, its people and notes"
)
def get_company(
    request: Request, caller: CallerDep, company_id: IdPath, cursor: Cursor = None
) -> companies.CompanyDetail:
    with reading(request) as session:
        return companies.get_company(session, caller.account_id, company_id, after=cursor)
