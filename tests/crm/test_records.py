"""Cases, opportunities and companies through the store functions of their pages."""

from __future__ import annotations

import pytest

from crmdrop.store.accounts import StoreError, set_preference
from crmdrop.store.cases import (
    CASES,
    OPPORTUNITIES,
    edit_record,
    get_record,
    list_records_by_status,
)
from crmdrop.store.companies import get_company, list_companies
from crmdrop.store.records import create_company
from crmdrop.store.scope import NotFound
from tests.crm.conftest import Crm
from tests.support import make_message


def test_cases_filter_by_status_and_edit_title_and_status(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    desk.file(
        make_message(from_=desk.email, to=["jane@client.example"], subject="Fwd: Pump"), kind="case"
    )
    desk.file(
        make_message(from_=desk.email, to=["jane@client.example"], subject="Valve"), kind="case"
    )
    desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="Re: #CA1 parts"))
    with crm.db.writing() as session:
        row = edit_record(
            session, desk.account_id, CASES, 2, title="  Valve   leak ", status="closed"
        )
        assert (row.ref, row.title, row.status) == ("CA2", "Valve leak", "closed")
        for kwargs, message in (
            ({"title": "x", "status": "won"}, "not a case status"),
            ({"title": "  ", "status": "open"}, "needs a title"),
        ):
            with pytest.raises(StoreError, match=message):
                edit_record(session, desk.account_id, CASES, 1, **kwargs)
    with crm.db.reading() as session:
        assert [r.ref for r in list_records_by_status(session, desk.account_id, CASES, "open")] == [
            "CA1"
        ]
        assert [r.ref for r in list_records_by_status(session, desk.account_id, CASES)] == [
            "CA2",
            "CA1",
        ]
        with pytest.raises(StoreError):
            list_records_by_status(session, desk.account_id, CASES, "lost")
        case = get_record(session, desk.account_id, CASES, 1)
        assert case.title == "Pump" and [c.label for c in case.contacts] == ["Jane"]
        assert [n.subject for n in case.timeline.notes] == ["Re: #CA1 parts", "Fwd: Pump"]
        assert case.statuses == ["open", "closed"]
        with pytest.raises(NotFound):
            get_record(session, desk.account_id, OPPORTUNITIES, 1)


def test_a_company_page_shows_its_people_and_with_the_preference_their_notes(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    with crm.db.writing() as session:
        company = create_company(
            session,
            "Client Inc",
            account="acme",
            domain="client.example",
            emails=["sales@client.example"],
        ).id
    desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="To Jane"))
    desk.file(make_message(from_=desk.email, to=["sales@client.example"], subject="To sales"))
    with crm.db.reading() as session:
        page = get_company(session, desk.account_id, company)
        assert [p.label for p in page.people] == ["Jane"] and page.emails == [
            "sales@client.example"
        ]
        assert [n.subject for n in page.timeline.notes] == ["To sales"]
        assert [
            (c.name, c.people) for c in list_companies(session, desk.account_id, search="CLIENT")
        ] == [("Client Inc", 1)]
    with crm.db.writing() as session:
        set_preference(session, "acme", "file-under-companies", True)
    with crm.db.reading() as session:
        page = get_company(session, desk.account_id, company)
        assert [n.subject for n in page.timeline.notes] == ["To sales", "To Jane"]
    other = crm.desk("spy@rival.example", "rival")
    with pytest.raises(NotFound), crm.db.reading() as session:
        get_company(session, other.account_id, company)
