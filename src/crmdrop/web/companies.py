"""Companies: the list and a company's page (its addresses, domain, people and notes)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmdrop.store.companies import get_company, list_companies
from crmdrop.web.auth import CurrentUser
from crmdrop.web.common import database, render

router = APIRouter()


@router.get("/companies")
def companies_list(request: Request, user: CurrentUser, q: str = "") -> Response:
    with database(request).reading() as session:
        rows = list_companies(session, user.account_id, search=q)
    return render(request, "contacts/companies.html", rows=rows, q=q)


@router.get("/companies/{company_id}")
def company_page(
    request: Request, user: CurrentUser, company_id: int, after: str | None = None
) -> Response:
    with database(request).reading() as session:
        company = get_company(session, user.account_id, company_id, after=after)
    return render(request, "contacts/company.html", company=company)
