"""The CLI's side of the user and settings behaviours the web pages also offer (the same
store functions): deactivate and roles, additional addresses, exclusions, time zone."""

from __future__ import annotations

import smtplib

import pytest

from tests.conftest import Crm
from tests.support import make_message, smtp_send


def test_a_deactivated_users_dropbox_refuses_mail_until_reactivated(crm: Crm) -> None:
    owner = crm.new_owner()
    refused_admin = crm.cli.run("users", "deactivate", owner.email, ok=False)
    assert "is the account's only admin" in refused_admin
    colleague = crm.new_owner(account=owner.account)
    crm.cli.run("users", "deactivate", colleague.email)
    msg = make_message(from_=colleague.email, to=["c@client.example"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_send(crm.smtp, colleague.email, [colleague.dropbox["note"]], msg)
    assert refused.value.recipients[colleague.dropbox["note"]][0] == 550
    crm.cli.run("users", "activate", colleague.email)
    assert smtp_send(crm.smtp, colleague.email, [colleague.dropbox["note"]], msg) == {}


def test_roles_keep_an_admin_in_every_account(crm: Crm) -> None:
    owner = crm.new_owner()
    colleague = crm.new_owner(account=owner.account)
    assert "only admin" in crm.cli.run("users", "role", owner.email, "member", ok=False)
    crm.cli.run("users", "role", colleague.email, "admin")
    crm.cli.run("users", "role", owner.email, "member")  # now there is another admin
    assert "say admin or member" in crm.cli.run("users", "role", owner.email, "boss", ok=False)
    assert "only admin" in crm.cli.run("users", "deactivate", colleague.email, ok=False)


def test_exclusions_addresses_and_time_zone(crm: Crm) -> None:
    owner = crm.new_owner()
    crm.cli.run("exclusions", "add", owner.account, "@Rival.example")
    crm.cli.run("exclusions", "add", owner.account, "info@shop.example")
    assert crm.cli.json("exclusions", "list", owner.account, "--json") == [
        "@rival.example",
        "info@shop.example",
    ]
    crm.cli.run("exclusions", "remove", owner.account, "@rival.example")
    assert crm.cli.json("exclusions", "list", owner.account, "--json") == ["info@shop.example"]
    crm.cli.run("addresses", "add", owner.email, "me@home.example")
    crm.cli.run("addresses", "remove", owner.email, "me@home.example")
    assert "not one of your additional" in crm.cli.run(
        "addresses", "remove", owner.email, "me@home.example", ok=False
    )
    crm.cli.run("users", "timezone", owner.email, "Europe/Paris")
    assert "unknown time zone" in crm.cli.run(
        "users", "timezone", owner.email, "Nowhere/X", ok=False
    )
