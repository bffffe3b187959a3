"""`crmdrop contacts list|merge` and `crmdrop deliveries undo` on mail filed over SMTP by
the running server (SQLite and PostgreSQL): the same store functions as the web pages."""

from __future__ import annotations

from tests.conftest import Crm
from tests.support import make_message, smtp_send


def test_contacts_are_merged_and_a_filing_undone_from_the_cli(crm: Crm) -> None:
    owner = crm.new_owner()
    for to in ("jane@client.example", "jane@home.example"):
        msg = make_message(from_=owner.email, to=[to], subject=f"To {to}")
        smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg)
    data = crm.settled(owner.account, 2)
    listed = crm.cli.json(
        "contacts", "list", "--account", owner.account, "--search", "home", "--json"
    )
    assert [r["email"] for r in listed] == ["jane@home.example"]

    same = crm.cli.run(
        "contacts", "merge", "jane@client.example", "jane@client.example",
        "--account", owner.account, ok=False,
    )  # fmt: skip
    assert "cannot be merged with itself" in same
    crm.cli.run(
        "contacts", "merge", "jane@client.example", "jane@home.example", "--account", owner.account
    )
    merged = crm.export(owner.account)
    assert [sorted(c["emails"]) for c in merged["contacts"]] == [
        ["jane@client.example", "jane@home.example"]
    ]
    assert all(n["contacts"] == ["jane@client.example"] for n in merged["notes"])

    first = data["deliveries"][0]["id"]
    out = crm.cli.run("deliveries", "undo", str(first), "--as", owner.email)
    assert "removed: note" in out
    after = crm.export(owner.account)
    assert [d["status"] for d in after["deliveries"]] == ["undone", "filed"]
    assert [n["subject"] for n in after["notes"]] == ["To jane@home.example"]
    again = crm.cli.run("deliveries", "undo", str(first), "--as", owner.email, ok=False)
    assert "undone already" in again
