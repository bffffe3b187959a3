"""The classes of forwarded blocks issue #10 found misread, each in the words of the issue."""

from __future__ import annotations

from datetime import datetime

import pytest

from crmdrop.dropbox.names import contact_name
from crmdrop.mail.forwarded import find_forwarded_blocks
from crmdrop.mail.model import ForwardedBlock
from crmdrop.mail.names import is_usable_name


def _only(text: str) -> ForwardedBlock:
    blocks = [b for b in find_forwarded_blocks(text) if b.from_ is not None]
    assert blocks, text
    return blocks[0]


def test_yahoo_flattened_block_is_read_field_by_field() -> None:
    text = (
        "FYI\n\n----- Forwarded Message -----\n"
        'From: John Doe <john@x.example>To: "ann@x.example" <ann@x.example>'
        "Cc: Carl Cee <carl@x.example>Sent: Tuesday, November 2, 2021, 09:26:50 AM GMT+1"
        "Subject: Re: Offer: prices\n\nThe words.\n"
    )
    b = _only(text)
    assert b.from_ is not None and (b.from_.name, b.from_.address) == ("John Doe", "john@x.example")
    assert [m.address for m in b.to] == ["ann@x.example"]
    assert [m.address for m in b.cc] == ["carl@x.example"]
    assert b.date is not None and b.date.replace(tzinfo=None) == datetime(2021, 11, 2, 9, 26, 50)
    assert b.subject == "Re: Offer: prices"
    assert b.body == "The words."


@pytest.mark.parametrize(
    "lead_in",
    [
        '\ufeffEl 28/10/2021 12:46, "John Doe" <john@x.example> escribió:',
        "\ufeffLe 28/10/2021 12:46, « John Doe » <john@x.example> a écrit :",
        "Il giorno 28/10/2021 12:46, John Doe <john@x.example> ha scritto:",
        "Em 28/10/2021 12:46, John Doe <john@x.example> escreveu:",
        "2021. 10. 28. 12:46 időpontban John Doe <john@x.example> ezt írta:",
        "W dniu 28.10.2021 o 12:46, użytkownik „John Doe” <john@x.example> napisał:",
        'Den 28 okt. 2021 kl. 12:46 skrev "John Doe" <john@x.example> följande:',
    ],
)
def test_outlook_2019_lead_ins_give_the_author_its_own_name(lead_in: str) -> None:
    b = _only(f"Please file.\n\n{lead_in}\n\nThe original words.\n")
    assert b.from_ is not None and b.from_.address == "john@x.example"
    assert contact_name(b.from_.name, b.from_.address) == "John Doe"
    assert b.date is not None and (b.date.month, b.date.day, b.date.hour) == (10, 28, 12)


def test_thunderbird_kopie_cc_label_is_a_cc_line() -> None:
    text = (
        "-------- Weitergeleitete Nachricht --------\nBetreff: Angebot\n"
        "Datum: Tue, 2 Nov 2021 09:26:50 +0100\nVon: John Doe <john@x.example>\n"
        "An: Ann <ann@x.example>\nKopie (CC): Carl <carl@x.example>\n\nText\n"
    )
    b = _only(text)
    assert [m.address for m in b.to] == ["ann@x.example"]
    assert [m.address for m in b.cc] == ["carl@x.example"]


def test_full_width_colons_never_leak_into_the_subject() -> None:
    text = (
        "-----Original Message-----\n差出人：山田 太郎 <taro@x.example>\n"
        "送信日時：2021年11月2日 9:26\n件名：見積もり\n送信先：ann@x.example\n\n本文\n"
    )
    b = _only(text)
    assert b.subject == "見積もり"
    assert [m.address for m in b.to] == ["ann@x.example"]


def test_outlook_web_last_first_names_and_wrapped_lines() -> None:
    text = (
        "________________________________\nFrom: Doe, John\n<john@x.example>\n"
        "Sent: Tuesday, November 2, 2021 9:26 AM\nTo: Lee, Ann <ann@x.example>; Roe,\n"
        "Rick <rick@x.example>\nSubject: Offer\n\nText\n"
    )
    b = _only(text)
    assert b.from_ is not None and b.from_.address == "john@x.example"
    assert contact_name(b.from_.name, b.from_.address) == "John Doe"
    assert [m.address for m in b.to] == ["ann@x.example", "rick@x.example"]


@pytest.mark.parametrize(
    "debris",
    [
        "Le 28/10/2021 12:46, « John Doe »",
        "użytkownik „John Doe”",
        "időpontban John Doe",
        "Subject:",
        "12:46",
        "John Doe escribió",
    ],
)
def test_lead_in_debris_is_no_name_and_the_local_part_names_the_contact(debris: str) -> None:
    assert not is_usable_name(debris)
    assert contact_name(debris, "jane.roe@x.example") == "Jane Roe"


@pytest.mark.parametrize("name", ["John Doe", "Zoë O'Brien-Smith", "Post Mail", "山田 太郎"])
def test_real_names_are_kept(name: str) -> None:
    assert is_usable_name(name)
    assert contact_name(name, "jane.roe@x.example") == name
    assert contact_name("\ufeff" + name, "jane.roe@x.example") == name  # a BOM is cut
