"""Contacts through the store functions behind the web pages, API and CLI."""

from __future__ import annotations

import pytest

from crmdrop.store.accounts import StoreError
from crmdrop.store.contacts import (
    ContactEdit,
    delete_contact,
    get_contact,
    list_contacts,
    merge_contacts,
    update_contact,
)
from crmdrop.store.scope import NotFound
from crmdrop.store.timeline import fold_quoted
from tests.crm.conftest import Crm
from tests.support import make_message


def _ids_by_email(crm: Crm, account_id: int) -> dict[str, int]:
    with crm.db.reading() as session:
        page = list_contacts(session, account_id)
    return {r.email or "": r.id for r in page.rows}


def test_the_list_is_newest_activity_first_and_searchable(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    desk.file(
        make_message(from_=desk.email, to=['"Jane Doe" <jane@client.example>'], subject="One")
    )
    desk.file(make_message(from_=desk.email, to=['"Bob Stone" <bob@other.example>'], subject="Two"))
    with crm.db.reading() as session:
        page = list_contacts(session, desk.account_id)
        assert [r.email for r in page.rows] == ["bob@other.example", "jane@client.example"]
        assert [r.name for r in list_contacts(session, desk.account_id, search="jAnE").rows] == [
            "Jane Doe"
        ]
        by_mail = list_contacts(session, desk.account_id, search="other.exa")
        assert [r.name for r in by_mail.rows] == ["Bob Stone"]
        assert list_contacts(session, desk.account_id, search="%").rows == []
    # New mail to Jane makes her the most recent again.
    desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="Three"))
    with crm.db.reading() as session:
        assert list_contacts(session, desk.account_id).rows[0].email == "jane@client.example"


def test_the_list_pages_with_a_cursor_and_loses_no_one(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    people = [f"person{i:02d}@client.example" for i in range(60)]
    desk.file(make_message(from_=desk.email, to=people[:30], cc=people[30:], subject="All"))
    with crm.db.reading() as session:
        first = list_contacts(session, desk.account_id)
        assert len(first.rows) == 50 and first.next_cursor
        second = list_contacts(session, desk.account_id, after=first.next_cursor)
        assert second.next_cursor is None
        seen = [r.email for r in first.rows + second.rows]
        assert sorted(seen) == people
        with pytest.raises(StoreError):
            list_contacts(session, desk.account_id, after="not-a-cursor")


def test_a_contact_page_shows_the_timeline_newest_first(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    desk.file(
        make_message(
            from_=desk.email,
            to=["jane@client.example"],
            subject="Offer",
            body="Here is the offer.\n\nOn Mon, 1 Jan 2026, Jane wrote:\n> Send it please\n",
            attachments=[("offer.pdf", b"%PDF-1.4 offer")],
        ),
        kind="case",
    )
    desk.file(
        make_message(from_="jane@client.example", to=[desk.email], subject="Thanks"),
        sender="jane@client.example",
    )
    contact_id = _ids_by_email(crm, desk.account_id)["jane@client.example"]
    with crm.db.reading() as session:
        page = get_contact(session, desk.account_id, contact_id)
    assert page.emails == ["jane@client.example"]
    assert [n.subject for n in page.timeline.notes] == ["Thanks", "Offer"]
    thanks, offer = page.timeline.notes
    assert thanks.direction == "to_user" and offer.direction == "from_user"
    assert offer.body == "Here is the offer."  # quoted history trimmed at filing
    assert [a.filename for a in offer.attachments] == ["offer.pdf"]
    assert [c.label for c in offer.cases] == ["CA1"]
    assert offer.dropbox == "case" and offer.filed_by == desk.email
    assert page.created_by_delivery_id is not None


def test_edit_changes_name_addresses_and_company_and_refuses_bad_input(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    desk.file(make_message(from_=desk.email, to=["jane@client.example", "bob@client.example"]))
    ids = _ids_by_email(crm, desk.account_id)
    jane = ids["jane@client.example"]
    with crm.db.writing() as session:
        row = update_contact(
            session,
            desk.account_id,
            jane,
            ContactEdit("Jane Q. Doe", ["JANE@client.example", "jd@home.example"], None),
        )
    assert row.name == "Jane Q. Doe" and row.email == "jane@client.example"
    for edit, message in (
        (ContactEdit("", ["jane@client.example"], None), "needs a name"),
        (ContactEdit("J", ["not an address"], None), "not a valid email address"),
        (ContactEdit("J", ["bob@client.example"], None), "belongs to another contact"),
    ):
        with pytest.raises(StoreError, match=message), crm.db.writing() as session:
            update_contact(session, desk.account_id, jane, edit)
    with crm.db.reading() as session:
        page = get_contact(session, desk.account_id, jane)
    assert page.name == "Jane Q. Doe"
    assert page.emails == ["jane@client.example", "jd@home.example"]


def test_merge_keeps_every_note_and_address(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="Work"))
    desk.file(make_message(from_=desk.email, to=["jane@home.example"], subject="Home"))
    desk.file(
        make_message(
            from_=desk.email, to=["jane@client.example", "jane@home.example"], subject="Both"
        )
    )
    ids = _ids_by_email(crm, desk.account_id)
    keep, other = ids["jane@client.example"], ids["jane@home.example"]
    with crm.db.writing() as session:
        with pytest.raises(StoreError, match="itself"):
            merge_contacts(session, desk.account_id, keep, keep)
        merge_contacts(session, desk.account_id, keep, other)
    with crm.db.reading() as session:
        page = get_contact(session, desk.account_id, keep)
        assert sorted(page.emails) == ["jane@client.example", "jane@home.example"]
        assert sorted(n.subject for n in page.timeline.notes) == ["Both", "Home", "Work"]
        with pytest.raises(NotFound):
            get_contact(session, desk.account_id, other)
    # The merged-away contact is gone meanwhile: a second merge says so.
    with pytest.raises(NotFound), crm.db.writing() as session:
        merge_contacts(session, desk.account_id, keep, other)


def test_another_accounts_contact_is_not_found(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    rival = crm.desk("spy@rival.example", "rival")
    desk.file(make_message(from_=desk.email, to=["jane@client.example"]))
    jane = _ids_by_email(crm, desk.account_id)["jane@client.example"]
    with crm.db.writing() as session:
        assert list_contacts(session, rival.account_id).rows == []
        with pytest.raises(NotFound):
            get_contact(session, rival.account_id, jane)
        with pytest.raises(NotFound):
            update_contact(session, rival.account_id, jane, ContactEdit("X", [], None))
        with pytest.raises(NotFound):
            delete_contact(session, rival.account_id, jane)
        with pytest.raises(NotFound):
            merge_contacts(session, rival.account_id, jane, jane + 1)
    with crm.db.writing() as session:
        delete_contact(session, desk.account_id, jane)
    with crm.db.reading() as session:
        assert list_contacts(session, desk.account_id).rows == []


def test_quoted_history_left_in_a_body_is_folded_apart() -> None:
    assert fold_quoted("Yes.\n\nOn Mon, 1 Jan 2026, Jane wrote:\n> Really?\n") == (
        "Yes.",
        "On Mon, 1 Jan 2026, Jane wrote:\n> Really?",
    )
    assert fold_quoted("> all quote\n") == ("> all quote\n", "")
    assert fold_quoted("no quote") == ("no quote", "")
