"""A forward that carries a thread keeps every message of it (issue #10)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from crmdrop.dropbox.chain import ChainPerson, chain_of
from crmdrop.mail.parse import parse_message

RAW = (
    b"From: Owner <owner@ourco.example>\nTo: drop@crm.example\nSubject: Fwd: Re: Offer\n"
    b"Date: Wed, 24 Nov 2021 10:00:00 +0000\nContent-Type: text/plain; charset=utf-8\n\n"
    b"Please file the whole thread.\n\n"
    b"---------- Forwarded message ---------\n"
    b"From: Jane Doe <jane.doe@client.example>\nDate: Tue, Nov 23, 2021 at 9:26 AM\n"
    b"Subject: Re: Offer\nTo: Owner <owner@ourco.example>\n"
    b"Cc: Carla Copy <carla@client.example>\n\n"
    b"Yes, we accept.\n\n"
    b"On Mon, Nov 22, 2021 at 4:10 PM Paul Older <paul@vendor.example> wrote:\n"
    b"> Here is our offer.\n> Best, Paul\n"
)


def test_every_message_of_a_forwarded_thread_is_kept_newest_first() -> None:
    chain = chain_of(parse_message(RAW), "Europe/Berlin")
    assert [m.author for m in chain] == [
        ChainPerson("Jane Doe", "jane.doe@client.example"),
        ChainPerson("Paul Older", "paul@vendor.example"),
    ]
    newest, older = chain
    berlin = ZoneInfo("Europe/Berlin")
    assert newest.date == datetime(2021, 11, 23, 9, 26, tzinfo=berlin)
    assert older.date == datetime(2021, 11, 22, 16, 10, tzinfo=berlin)
    assert newest.to == (ChainPerson("Owner", "owner@ourco.example"),)
    assert newest.cc == (ChainPerson("Carla Copy", "carla@client.example"),)
    assert newest.text == "Yes, we accept."
    assert older.text == "Here is our offer.\nBest, Paul"
    assert (newest.kind, older.kind) == ("forward", "reply")
    assert newest.to_json()["date"] == "2021-11-23T09:26:00+01:00"


def test_a_message_without_forwarded_blocks_has_no_chain() -> None:
    raw = b"From: a@x.example\nTo: b@y.example\nSubject: Hi\n\nJust words.\n"
    assert chain_of(parse_message(raw), "UTC") == ()
