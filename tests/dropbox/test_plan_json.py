"""`FilingPlan.to_json`, written out per class, gives what a walk over the dataclasses'
fields gives: every field, in field order, dates as ISO strings, enums as values (the
processing record's JSON is a contract: docs/export.md)."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from crmdrop.dropbox.plan import (
    AddressDecision,
    ChainMessage,
    ChainPerson,
    ContactAction,
    DropboxKind,
    FilingPlan,
    ForwardedEntry,
    NoteDraft,
    Outcome,
    RecordAction,
    TaskAction,
)


def walk(value: Any) -> Any:
    """The JSON of a plan by its fields (ForwardedEntry and ChainMessage by their own)."""
    if isinstance(value, ForwardedEntry | ChainMessage):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: walk(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [walk(v) for v in value]
    return value


WHEN = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
PERSON = ChainPerson("Jane", "jane@client.example")
FULL = FilingPlan(
    outcome=Outcome.FILED,
    dropbox=DropboxKind.CASE,
    message_key="<k@x>",
    addresses=[
        AddressDecision("jane@client.example", "Jane", ("header:to", "body:text"), True, "contact"),
        AddressDecision("o@acme.com", "", ("header:from",), False, "owner", "the owner"),
    ],
    contacts=[
        ContactAction("jane@client.example", "Jane", "create_contact", None, None, 4, "new"),
        ContactAction("b@client.example", "B", "link_contact", 7, 3, None, "address"),
    ],
    note=NoteDraft(
        subject="Pumps",
        body="Body",
        own_text="Mine",
        author_name="O",
        author_email="o@acme.com",
        date=WHEN,
        direction="from_user",
        is_forward=True,
        attachment_names=("a.pdf", "b.png"),
        chain=(ChainMessage(PERSON, WHEN, (PERSON,), (), "Pumps", "Quoted", "forward"),),
    ),
    records=[
        RecordAction("case", "link", 5, "CA5", None, "reference #CA5"),
        RecordAction("opportunity", "create", None, None, "Pumps", "new"),
    ],
    task=TaskAction("Call", "Call Jane", date(2026, 3, 3), "tomorrow", "Europe/Paris"),
    notices=["reference #CA9 is of another account: ignored"],
    forwarded=[
        ForwardedEntry(
            1,
            "forward",
            "Jane <jane@client.example>",
            ("o@acme.com",),
            (None,),
            WHEN,
            "Mon, 2 Mar",
            "Pumps",
            "gmail",
            "en",
        )
    ],
    reason="filed under 2 contacts (1 created)",
    note_id=None,
    reply_to="o@acme.com",
    auto_generated="Auto-Submitted: auto-replied",
)


def test_a_plan_with_every_field_gives_its_fields_in_order() -> None:
    data = FULL.to_json()
    expected = walk(FULL)
    assert data == expected
    assert json.dumps(data) == json.dumps(expected)  # values and key order alike
    assert (
        data["note"]["date"] == "2026-03-02T09:15:00+00:00" and data["task"]["due"] == "2026-03-03"
    )


def test_an_empty_plan_gives_its_fields_in_order() -> None:
    plan = FilingPlan(Outcome.NO_CONTACT, DropboxKind.NOTE, "<k@x>")
    assert json.dumps(plan.to_json()) == json.dumps(walk(plan))
