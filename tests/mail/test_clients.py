"""Whole messages forwarded by each supported client (fixtures/clients/*.eml).

Every fixture forwards (or, for Spark, quotes) the same original: written by Kunde Eins
<customer@client.example> to the sales team, Cc Carla, on 5 March 2024 at 14:30,
subject "Angebot 4711". Plain-text and HTML-only variants exercise both paths.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crmdrop.mail.parse import parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "clients"
CLIENTS = sorted(p.stem for p in FIXTURES.glob("*.eml"))
REQUIRED = [
    "gmail",
    "outlook_desktop",
    "outlook_2010",
    "outlook_web",
    "outlook_mobile",
    "apple_mail",
    "apple_ios",
    "thunderbird",
    "yahoo",
    "aol",
    "yandex",
    "mailru",
    "zimbra",
    "roundcube",
    "notes",
    "gmx",
    "proton",
    "fastmail",
    "samsung",
    "spark",
    "hubspot",
    "missive",
    "ionos",
    "mailmate",
]
# Clients whose block names recipients without addresses, or none at all.
NAMES_ONLY = {"outlook_2010"}
NO_RECIPIENTS = {"yandex", "spark"}
NO_SUBJECT = {"yandex", "spark"}


def test_every_required_client_has_a_fixture() -> None:
    assert set(REQUIRED) <= set(CLIENTS)


@pytest.mark.parametrize("client", CLIENTS)
def test_client_forward_yields_the_original_author_recipients_and_own_words(client: str) -> None:
    parsed = parse_message((FIXTURES / f"{client}.eml").read_bytes())
    assert parsed.own_text == "Please file this."
    block = next(b for b in parsed.forwarded if b.from_ is not None)
    assert block.kind == ("reply" if client == "spark" else "forward")
    assert block.from_ is not None
    assert (block.from_.name, block.from_.address) == ("Kunde Eins", "customer@client.example")
    assert block.date is not None
    assert (block.date.year, block.date.month, block.date.day) == (2024, 3, 5)
    assert (block.date.hour, block.date.minute) == (14, 30)
    assert block.body == "Original words of the customer."
    if client in NO_RECIPIENTS:
        assert block.to == () and block.cc == ()
    elif client in NAMES_ONLY:
        # names kept, never invented into addresses
        assert [(m.name, m.address) for m in block.to] == [("Sales Team", None)]
        assert [(m.name, m.address) for m in block.cc] == [("Carla Copy", None)]
    else:
        assert [m.address for m in block.to] == ["sales@ourco.example"]
        assert [m.address for m in block.cc] == ["carla@client.example"]
    if client not in NO_SUBJECT:
        assert block.subject == "Angebot 4711"
    found = {(a.address, a.where) for a in parsed.addresses}
    assert ("customer@client.example", f"forwarded[{block.depth}]:from") in found
    assert ("me@ourco.example", "header:from") in found
