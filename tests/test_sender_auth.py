"""Sender authentication end to end: a server that trusts its upstream MTA's
Authentication-Results refuses the owner's address when its domain fails DMARC."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVER_ENV, own_server
from tests.support import Cli, ServerProcess, make_message, smtp_send, wait_for


@pytest.fixture(params=["sqlite", "postgresql"])
def trusting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ServerProcess, Cli]]:
    env = {**SERVER_ENV, "CRMDROP_SENDER_AUTH": "upstream", "CRMDROP_UPSTREAM_AUTHSERV": "mx.test"}
    for own in own_server(request.param, tmp_path, env):
        yield own.server, own.cli


def test_a_spoofed_owner_address_failing_dmarc_upstream_is_refused(
    trusting: tuple[ServerProcess, Cli],
) -> None:
    server, cli = trusting
    owner = cli.add_user("olivia@mycorp.example", "auth")
    dropbox = owner["dropbox"]["note"]
    spoofed = make_message(
        from_=owner["email"],
        to=["victim@client.example"],
        headers={"Authentication-Results": "mx.test; dmarc=fail header.from=mycorp.example"},
    )
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_send(server.smtp_port, owner["email"], [dropbox], spoofed)
    assert refused.value.smtp_code == 550 and b"sender authentication" in refused.value.smtp_error

    genuine = make_message(
        from_=owner["email"],
        to=["real@client.example"],
        headers={"Authentication-Results": "mx.test; dmarc=pass header.from=mycorp.example"},
    )
    # Anyone can write such a header: one from a server that is not trusted counts for nothing.
    genuine["Authentication-Results"] = "evil.example; dmarc=fail header.from=mycorp.example"
    smtp_send(server.smtp_port, owner["email"], [dropbox], genuine)

    def filed() -> dict | None:
        data = cli.export("auth")
        return data if any(d["status"] == "filed" for d in data["deliveries"]) else None

    data = wait_for(filed, what="the genuine message to be filed")
    assert [n["contacts"] for n in data["notes"]] == [["real@client.example"]]
    assert sorted(d["status"] for d in data["deliveries"]) == ["filed", "rejected"]
