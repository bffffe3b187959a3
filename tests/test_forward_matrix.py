"""Issue #10 end to end: a flattened Yahoo forward, an Outlook 2019 Spanish reply-style
forward and a German Thunderbird forward — rendered by the matrix renderer from the label
table — are explained by `crmdrop explain` and filed over SMTP under the original author,
with the right name, date and Cc, on both backends."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from crmdrop.config import load_settings
from crmdrop.store.contacts import get_contact
from crmdrop.store.db import Database
from crmdrop.store.models import Account, ContactEmail
from tests.conftest import Crm
from tests.support import make_message, smtp_send

sys.path.insert(0, str(Path(__file__).parent / "mail"))
from matrix.render import CC, Case, Person, render

JANE = Person("Jane Doe", "jane.doe@client.example", "Doe", "Jane")
WHEN = datetime(2021, 11, 23, 9, 26)


def _raw(client: str, language: str, owner: str, dropbox: str) -> bytes:
    case = Case(client, language, author=JANE, cc=(CC[0],), when=WHEN)
    raw = render(case).raw
    return raw.replace(b"owner@ourco.example", owner.encode()).replace(
        b"dropbox@crm.example", dropbox.encode()
    )


# (client, language, the date as filed: Yahoo names its zone, the others are the owner's)
CASES = [
    ("yahoo", "en", "2021-11-23T09:26:00+01:00", True),
    ("outlook_2019", "es", "2021-11-23T09:26:00+00:00", False),  # a lead-in names no Cc
    ("thunderbird", "de", "2021-11-23T09:26:00+00:00", True),
]


@pytest.mark.parametrize(("client", "language", "date", "has_cc"), CASES)
def test_explain_and_filing_give_the_original_author_name_date_and_cc(
    crm: Crm, tmp_path: Path, client: str, language: str, date: str, has_cc: bool
) -> None:
    owner = crm.new_owner()
    crm.cli.run("exclusions", "add", owner.account, "@ourco.example")
    raw = _raw(client, language, owner.email, owner.dropbox["note"])
    path = tmp_path / f"{client}.eml"
    path.write_bytes(raw)

    explained = crm.cli.json("explain", str(path), "--to", owner.dropbox["note"], "--json")
    note = explained["plan"]["note"]
    assert (note["author_name"], note["author_email"]) == ("Jane Doe", "jane.doe@client.example")
    assert note["date"] == date
    contacts = {c["address"]: c["name"] for c in explained["plan"]["contacts"]}
    assert contacts.get("jane.doe@client.example") == "Jane Doe"
    if has_cc:
        assert explained["plan"]["forwarded"][0]["cc"] == ["Carla Copy <carla.copy@client.example>"]
        assert contacts.get("carla.copy@client.example") == "Carla Copy"
    text = crm.cli.run("explain", str(path), "--to", owner.dropbox["note"])
    assert "by Jane Doe <jane.doe@client.example>" in text
    assert f"date {date}" in text
    if has_cc:
        assert "cc=['Carla Copy <carla.copy@client.example>']" in text

    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    data = crm.settled(owner.account, timeout=90)  # a fresh worker first builds its tables
    assert [d["status"] for d in data["deliveries"]] == ["filed"], data["deliveries"]
    (filed,) = data["notes"]
    assert (filed["author"], filed["author_email"]) == ("Jane Doe", "jane.doe@client.example")
    assert datetime.fromisoformat(filed["date"]) == datetime.fromisoformat(date)  # the instant
    assert filed["subject"] == "Angebot 4711"
    want = (
        ["carla.copy@client.example", "jane.doe@client.example"]
        if has_cc
        else ["jane.doe@client.example"]
    )
    assert filed["contacts"] == want
    names = {e: c["name"] for c in data["contacts"] for e in c["emails"]}
    assert names["jane.doe@client.example"] == "Jane Doe"


THREAD = (
    "Please file the whole thread.\n\n"
    "---------- Forwarded message ---------\n"
    "From: Jane Doe <jane.doe@client.example>\nDate: Tue, Nov 23, 2021 at 9:26 AM\n"
    "Subject: Re: Offer\nTo: Sales <sales@ourco.example>\n"
    "Cc: Carla Copy <carla.copy@client.example>\n\n"
    "Yes, we accept.\n\n"
    "On Mon, Nov 22, 2021 at 4:10 PM Paul Older <paul@vendor.example> wrote:\n"
    "> Here is our offer.\n"
)


def test_a_forwarded_thread_keeps_every_message_in_export_explain_and_the_timeline(
    crm: Crm, tmp_path: Path
) -> None:

    owner = crm.new_owner()
    crm.cli.run("exclusions", "add", owner.account, "@ourco.example")
    msg = make_message(
        from_=owner.email, to=[owner.dropbox["note"]], subject="Fwd: Re: Offer", body=THREAD
    )
    path = tmp_path / "thread.eml"
    path.write_bytes(msg.as_bytes())
    text = crm.cli.run("explain", str(path), "--to", owner.dropbox["note"])
    assert "conversation (2 messages, newest first):" in text
    assert "[1] Jane Doe <jane.doe@client.example>; date 2021-11-23T09:26:00+00:00" in text
    assert "[2] Paul Older <paul@vendor.example>; date 2021-11-22T16:10:00+00:00" in text

    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg)
    data = crm.settled(owner.account, timeout=90)  # a fresh worker first builds its tables
    (note,) = data["notes"]
    assert (note["author"], note["date"]) == ("Jane Doe", "2021-11-23T09:26:00+00:00")
    assert [(m["author"]["email"], m["date"], m["text"]) for m in note["chain"]] == [
        ("jane.doe@client.example", "2021-11-23T09:26:00+00:00", "Yes, we accept."),
        ("paul@vendor.example", "2021-11-22T16:10:00+00:00", "Here is our offer."),
    ]
    assert note["chain"][0]["cc"] == [{"name": "Carla Copy", "email": "carla.copy@client.example"}]
    assert note["contacts"] == [
        "carla.copy@client.example",
        "jane.doe@client.example",
        "paul@vendor.example",
    ]

    env = crm.cli.env
    settings = load_settings(
        data_dir=Path(env["CRMDROP_DATA_DIR"]), database_url=env.get("CRMDROP_DATABASE_URL")
    )
    db = Database(settings.db_url)
    try:
        with db.reading() as session:
            account_id = session.scalar(select(Account.id).where(Account.name == owner.account))
            paul = session.scalar(
                select(ContactEmail.contact_id).where(
                    ContactEmail.email == "paul@vendor.example",
                    ContactEmail.account_id == account_id,
                )
            )
            assert account_id is not None and paul is not None
            (entry,) = get_contact(session, account_id, paul).timeline.notes
    finally:
        db.dispose()
    assert [m.author.name for m in entry.messages if m.author] == ["Jane Doe", "Paul Older"]
    assert entry.messages[1].text == "Here is our offer."


def test_a_message_without_a_date_header_is_dated_when_it_was_received(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["undated@client.example"], subject="Undated")
    del msg["Date"]
    before = datetime.now(UTC)
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg)
    data = crm.settled(owner.account, timeout=90)
    (note,) = data["notes"]
    (delivery,) = data["deliveries"]
    assert note["date"] is not None
    assert before <= datetime.fromisoformat(note["date"]) <= datetime.now(UTC)
    assert note["date"] == delivery["received_at"]
