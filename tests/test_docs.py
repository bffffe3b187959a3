"""The documents name everything a user can set or read: no silent drift."""

from __future__ import annotations

import re
from pathlib import Path

from crmdrop.config import Settings
from tests.conftest import Crm
from tests.support import make_message, smtp_send

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"`CRMDROP_{name.upper()}`" not in text]
    assert missing == []


def _fields(value: object, prefix: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            found.add(key)
            found |= _fields(inner, key)
    elif isinstance(value, list):
        for inner in value:
            found |= _fields(inner, prefix)
    return found


def test_every_export_field_is_documented(crm: Crm) -> None:
    owner = crm.new_owner()
    forwarded = (
        "See below.\n\n---------- Forwarded message ---------\n"
        "From: Doc Client <doc@client.example>\nDate: Tue, Nov 23, 2021 at 9:26 AM\n"
        "Subject: Documented\nTo: Me <me@mycorp.example>\nCc: Cee <cee@client.example>\n\n"
        "Their words.\n"
    )
    msg = make_message(
        from_=owner.email, to=["doc@client.example"], subject="Fwd: Documented", body=forwarded
    )
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg)
    smtp_send(crm.smtp, owner.email, [owner.dropbox["today"]], msg)
    smtp_send(
        crm.smtp,
        owner.email,
        [owner.dropbox["case"]],
        make_message(from_=owner.email, to=["doc@client.example"], subject="Case"),
    )
    data = crm.settled(owner.account, count=3)
    text = (DOCS / "export.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", text))
    assert _fields(data) - documented == set()
