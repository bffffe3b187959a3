"""Postfix in front of a running `crmdrop serve`, wired with what `crmdrop mta postfix`
prints: mail to a live dropbox is relayed over LMTP and filed; an unknown or
regenerated dropbox is refused by Postfix itself at RCPT (550 5.1.1), so nothing
is accepted and later bounced (no backscatter) — on SQLite and PostgreSQL."""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.integrations.postfix_instance import PostfixInstance
from tests.support import free_port, make_message, wait_for


@dataclass
class Stack:
    crm: OwnServer
    mx: PostfixInstance

    def owner(self) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:10]
        return self.crm.cli.add_user(f"owner-{tag}@mycorp.example", f"acct-{tag}")

    def send(self, mail_from: str, rcpts: list[str], raw: bytes) -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", self.mx.port, timeout=30) as client:
            refused: dict[str, Any] = client.sendmail(mail_from, rcpts, raw)
            return refused


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    env = {**SERVER_ENV, "CRMDROP_POSTFIX_POLICY_LISTEN": f"127.0.0.1:{free_port()}"}
    data_dir: Path = tmp_path_factory.mktemp(f"postfix-{request.param}")
    for crm in own_server(request.param, data_dir, env):
        block = crm.cli.run("mta", "postfix", "--lmtp", f"127.0.0.1:{crm.server.lmtp_port}")
        with PostfixInstance() as mx:
            mx.apply(block)
            mx.start()
            yield Stack(crm, mx)


def test_the_printed_block_is_one_paste_of_postconf_lines(stack: Stack) -> None:
    block = stack.crm.cli.run("mta", "postfix", "--lmtp", "127.0.0.1:2424")
    commands = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
    assert all(ln.startswith(("postconf -e ", "postfix reload")) for ln in commands), block
    assert "check_policy_service { inet:127.0.0.1:" in block
    assert "lmtp:inet:127.0.0.1:2424" in block
    assert stack.mx.postconf("-h", "relay_domains").strip() == "dropbox.test"


def test_a_message_relayed_by_postfix_over_lmtp_is_filed(stack: Stack) -> None:
    owner = stack.owner()
    msg = make_message(from_=owner["email"], to=["Pat Partner <pat@partner.example>"])
    assert stack.send(owner["email"], [owner["dropbox"]["note"]], msg.as_bytes()) == {}

    def filed() -> dict[str, Any] | None:
        data = stack.crm.cli.export(owner["account"])
        return data if data["notes"] else None

    data = wait_for(filed, timeout=60, what="the relayed message to be filed")
    assert data["notes"][0]["contacts"] == ["pat@partner.example"]
    assert data["deliveries"][0]["protocol"] == "lmtp"


def test_unknown_and_regenerated_dropboxes_are_refused_at_rcpt_and_nothing_bounces(
    stack: Stack,
) -> None:
    owner = stack.owner()
    old = owner["dropbox"]["case"]
    stack.crm.cli.run("dropbox", "regenerate", owner["email"])
    unknown = "dropbox-nosuchtoken00000000@dropbox.test"
    msg = make_message(from_=owner["email"], to=["x@partner.example"]).as_bytes()
    for rcpt in (unknown, old):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            stack.send("sender@partner.example", [rcpt], msg)
        code, text = refused.value.recipients[rcpt]
        assert code == 550 and text.startswith(b"5.1.1 "), (rcpt, text)
        assert b"No such dropbox here" in text
    # nothing was taken, so nothing waits in Postfix's queue and no bounce was made
    wait_for(lambda: stack.mx.queued() == [], timeout=60, what="Postfix's queue to be empty")
    # refused before anything was queued (postlogd writes the log a moment later)
    wait_for(lambda: stack.mx.log().count("NOQUEUE: reject: RCPT") >= 2, what="the rejects logged")
    log = stack.mx.log()
    assert "sender non-delivery notification" not in log
    assert "status=bounced" not in log
