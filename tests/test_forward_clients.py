"""Issue #3 end to end: a forward written by each major mail client, sent over SMTP,
is filed under the original author and recipients — never under the forwarder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Crm
from tests.support import smtp_send

CLIENTS = Path(__file__).parent / "mail" / "fixtures" / "clients"


def as_sent_by(raw: bytes, owner: str, dropbox: str) -> bytes:
    """The fixture as the owner's own client would send it: from the owner, to the dropbox."""
    head, sep, body = raw.partition(b"\n\n")
    swap = {b"From:": f"From: Me Person <{owner}>", b"To:": f"To: CRM Dropbox <{dropbox}>"}
    lines = [
        next((new.encode() for key, new in swap.items() if line.startswith(key)), line)
        for line in head.split(b"\n")
    ]
    return b"\n".join(lines) + sep + body


@pytest.mark.parametrize(
    "client", ["gmail", "outlook_desktop", "outlook_web", "apple_mail", "thunderbird"]
)
def test_a_forward_from_each_major_client_lands_under_the_original_people(
    crm: Crm, client: str
) -> None:
    owner = crm.new_owner()
    crm.cli.run("exclusions", "add", owner.account, "@ourco.example")  # the owner's company
    raw = as_sent_by((CLIENTS / f"{client}.eml").read_bytes(), owner.email, owner.dropbox["note"])
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    data = crm.settled(owner.account)
    assert [d["status"] for d in data["deliveries"]] == ["filed"], data["deliveries"]
    (note,) = data["notes"]
    assert note["author_email"] == "customer@client.example"
    assert note["author"] == "Kunde Eins"
    assert note["is_forward"] is True
    assert note["subject"] == "Angebot 4711"
    assert note["direction"] == "to_user"
    assert "Original words of the customer." in note["body"]
    assert note["contacts"] == ["carla@client.example", "customer@client.example"]
    assert owner.email not in note["contacts"]
