"""The activity page's store functions: the processing record, undo, never-a-contact,
retry, downloads — and that none of it reaches into another account."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crmdrop.store.accounts import StoreError
from crmdrop.store.cases import CASES, get_record
from crmdrop.store.contacts import get_contact, list_contacts
from crmdrop.store.deliveries import (
    attachment_file,
    delete_created_contact,
    get_delivery,
    list_activity,
    never_contact,
    note_original,
    raw_message,
    retry_delivery,
    undo_filing,
)
from crmdrop.store.export import export_account
from crmdrop.store.scope import NotFound
from crmdrop.store.tasks import set_task_done, task_board
from tests.crm.conftest import Crm, drain
from tests.support import make_message

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)  # actions are stamped; a retry is due at once


def test_activity_and_the_processing_record(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    first = desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="Hi"))
    desk.file(make_message(from_=desk.email, to=[desk.email], subject="Nobody"))
    with crm.db.reading() as session:
        page = list_activity(session, desk.user_id)
        assert [(r.subject, r.status) for r in page.rows] == [
            ("Nobody", "no_contact"),
            ("Hi", "filed"),
        ]
        assert [r.subject for r in list_activity(session, desk.user_id, status="filed").rows] == [
            "Hi"
        ]
        with pytest.raises(StoreError, match="not a delivery status"):
            list_activity(session, desk.user_id, status="bogus")
        record = get_delivery(session, desk.account_id, first)
    jane = next(a for a in record.addresses if a.address == "jane@client.example")
    owner = next(a for a in record.addresses if a.address == desk.email)
    assert jane.kept and "header:to" in jane.where
    assert not owner.kept and owner.rule == "owner"
    assert any(c.startswith("contact") for c in record.created)
    assert record.can_undo and not record.can_retry
    assert "token" not in record.rcpt_to and desk.token not in record.rcpt_to


def test_undo_removes_what_the_filing_made_and_retry_files_it_again(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    delivery = desk.file(
        make_message(from_=desk.email, to=["jane@client.example"], subject="Broken pump"),
        kind="case",
    )
    with crm.db.writing() as session:
        result = undo_filing(session, desk.account_id, desk.user_id, delivery, now=NOW)
    assert "CA1" in result.removed and any(r.startswith("note") for r in result.removed)
    with crm.db.reading() as session:
        data = export_account(session, "acme")
        record = get_delivery(session, desk.account_id, delivery)
    assert data["notes"] == [] and data["contacts"] == [] and data["cases"] == []
    assert record.status == "undone" and record.can_retry and not record.can_undo
    assert [a.kind for a in record.actions] == ["undo"]
    with pytest.raises(StoreError, match="undone already"), crm.db.writing() as session:
        undo_filing(session, desk.account_id, desk.user_id, delivery, now=NOW)
    with crm.db.writing() as session:
        retry_delivery(session, desk.account_id, desk.user_id, delivery, now=NOW)
    drain(crm.db, crm.settings)
    with crm.db.reading() as session:
        data = export_account(session, "acme")
        record = get_delivery(session, desk.account_id, delivery)
    assert record.status == "filed"
    assert [n["subject"] for n in data["notes"]] == ["Broken pump"]
    assert [c["emails"] for c in data["contacts"]] == [["jane@client.example"]]
    assert [a.kind for a in record.actions] == ["undo", "retry"]


def test_undo_keeps_a_contact_that_other_mail_refers_to(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    first = desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="A"))
    desk.file(make_message(from_=desk.email, to=["jane@client.example"], subject="B"))
    with crm.db.writing() as session:
        result = undo_filing(session, desk.account_id, desk.user_id, first, now=NOW)
    assert any("Jane" in k for k in result.kept)
    with crm.db.reading() as session:
        rows = list_contacts(session, desk.account_id).rows
        assert [
            n.subject for n in get_contact(session, desk.account_id, rows[0].id).timeline.notes
        ] == ["B"]


def test_never_a_contact_excludes_and_offers_to_delete_the_contact_it_made(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    delivery = desk.file(make_message(from_=desk.email, to=["info@noise.example"], subject="X"))
    with crm.db.writing() as session, pytest.raises(StoreError, match="not an address of"):
        never_contact(
            session,
            desk.account_id,
            desk.user_id,
            delivery,
            "x@y.example",
            whole_domain=False,
            now=NOW,
        )
    with crm.db.writing() as session:
        result = never_contact(
            session,
            desk.account_id,
            desk.user_id,
            delivery,
            "info@noise.example",
            whole_domain=True,
            now=NOW,
        )
    assert result.pattern == "@noise.example" and result.deletable is not None
    with crm.db.writing() as session:
        delete_created_contact(
            session, desk.account_id, desk.user_id, delivery, result.deletable.id, now=NOW
        )
    # The next message from that domain makes no contact.
    again = desk.file(make_message(from_=desk.email, to=["sales@noise.example"], subject="Y"))
    with crm.db.reading() as session:
        assert list_contacts(session, desk.account_id).rows == []
        record = get_delivery(session, desk.account_id, again)
        assert record.status == "no_contact"
        assert any(a.rule.startswith("excluded") for a in record.addresses)
        kinds = [a.kind for a in get_delivery(session, desk.account_id, delivery).actions]
    assert kinds == ["never_contact", "delete_contact"]


def test_tasks_are_grouped_in_the_users_time_zone_and_completed(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme", timezone="Pacific/Auckland")
    desk.file(
        make_message(from_=desk.email, to=["jane@client.example"], subject="Call"), kind="today"
    )
    desk.file(
        make_message(from_=desk.email, to=["jane@client.example"], subject="Plan"), kind="task"
    )
    with crm.db.reading() as session:
        board = task_board(session, desk.user_id, now=datetime.now(UTC))
    assert [t.title for t in board.groups["today"]] == ["Call"]  # type: ignore[index]
    assert [t.title for t in board.groups["no date"]] == ["Plan"]  # type: ignore[index]
    call = board.groups["today"][0]  # type: ignore[index]
    assert [c.label for c in call.contacts] == ["Jane"] and call.delivery_id
    with crm.db.writing() as session:
        set_task_done(session, desk.account_id, call.id, True)
    with crm.db.reading() as session:
        later = task_board(session, desk.user_id, now=datetime.now(UTC))
    assert [t.title for t in later.groups["done"]] == ["Call"]  # type: ignore[index]
    assert later.groups["today"] == []  # type: ignore[index]


def test_every_object_of_another_account_is_not_found(crm: Crm) -> None:
    desk = crm.desk("owner@mycorp.example", "acme")
    rival = crm.desk("spy@rival.example", "rival")
    delivery = desk.file(
        make_message(
            from_=desk.email,
            to=["jane@client.example"],
            subject="Secret",
            attachments=[("plan.pdf", b"secret plan")],
        ),
        kind="today",
    )
    with crm.db.reading() as session:
        record = get_delivery(session, desk.account_id, delivery)
        note = record.note_id
        assert note is not None
        attachment = (
            get_contact(
                session, desk.account_id, list_contacts(session, desk.account_id).rows[0].id
            )
            .timeline.notes[0]
            .attachments[0]
            .id
        )
        task = task_board(session, desk.user_id, now=datetime.now(UTC)).groups["today"][0].id  # type: ignore[index]
        assert attachment_file(session, desk.account_id, attachment).data == b"secret plan"
        assert b"Secret" in note_original(session, desk.account_id, note).data
        assert b"Secret" in raw_message(session, desk.account_id, delivery).data
    calls = [
        lambda s: get_delivery(s, rival.account_id, delivery),
        lambda s: raw_message(s, rival.account_id, delivery),
        lambda s: note_original(s, rival.account_id, note),
        lambda s: attachment_file(s, rival.account_id, attachment),
        lambda s: undo_filing(s, rival.account_id, rival.user_id, delivery, now=NOW),
        lambda s: retry_delivery(s, rival.account_id, rival.user_id, delivery, now=NOW),
        lambda s: never_contact(
            s,
            rival.account_id,
            rival.user_id,
            delivery,
            "jane@client.example",
            whole_domain=False,
            now=NOW,
        ),
        lambda s: set_task_done(s, rival.account_id, task, True),
        lambda s: get_record(s, rival.account_id, CASES, 1),
    ]
    for call in calls:
        with pytest.raises(NotFound), crm.db.writing() as session:
            call(session)
    with crm.db.reading() as session:
        assert list_activity(session, rival.user_id).rows == []
