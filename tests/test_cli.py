"""The command line against a real database: ingest's exit codes, explain, the
processing records, and a real failure parked and retried."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from crmdrop.cli import app
from tests.conftest import SERVER_ENV, Crm, own_server
from tests.support import Cli, ServerProcess, make_message, smtp_send, wait_for


def ingest(
    crm: Crm, to: str, raw: bytes, mail_from: str = ""
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **crm.cli.env}
    return subprocess.run(
        [sys.executable, "-m", "crmdrop", "ingest", "--to", to, "--from", mail_from],
        input=raw,
        env=env,
        capture_output=True,
        timeout=60,
    )


def test_users_show_prints_the_same_addresses_as_users_add(crm: Crm) -> None:
    owner = crm.new_owner()
    shown = crm.cli.json("users", "show", owner.email.upper(), "--json")
    assert shown == {"email": owner.email, "account": owner.account, "dropbox": owner.dropbox}


def test_ingest_queues_a_message_and_exits_0(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["piped@client.example"])
    done = ingest(crm, owner.dropbox["note"], msg.as_bytes(), owner.email)
    assert done.returncode == 0, done.stderr
    data = crm.settled(owner.account)
    assert data["notes"][0]["contacts"] == ["piped@client.example"]
    assert data["deliveries"][0]["protocol"] == "pipe"


def test_ingest_exits_67_for_an_unknown_dropbox(crm: Crm) -> None:
    done = ingest(crm, "dropbox-nobody00000000000@dropbox.test", b"Subject: x\r\n\r\nx\r\n")
    assert done.returncode == 67
    assert b"5.1.1" in done.stderr


def test_ingest_exits_77_for_a_sender_not_allowed(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_="stranger@elsewhere.example", to=["x@client.example"])
    done = ingest(crm, owner.dropbox["note"], msg.as_bytes(), "stranger@elsewhere.example")
    assert done.returncode == 77
    assert b"5.7.1" in done.stderr


def test_explain_prints_the_decision_without_changing_anything(crm: Crm, tmp_path: Path) -> None:
    owner = crm.new_owner()
    crm.cli.run("exclusions", "add", owner.account, "@noise.example")
    msg = make_message(
        from_=owner.email,
        to=["Kim Lee <kim@client.example>", "bot@noise.example"],
        subject="Explained",
    )
    path = tmp_path / "m.eml"
    path.write_bytes(msg.as_bytes())
    result = crm.cli.json("explain", str(path), "--to", owner.dropbox["note"], "--json")
    rules = {a["address"]: (a["kept"], a["rule"]) for a in result["plan"]["addresses"]}
    assert rules["kim@client.example"] == (True, "contact")
    assert rules["bot@noise.example"][0] is False
    assert rules[owner.email] == (False, "owner")
    assert result["plan"]["contacts"][0]["action"] == "create_contact"
    assert result["plan"]["contacts"][0]["name"] == "Kim Lee"
    text = crm.cli.run("explain", str(path), "--to", owner.dropbox["note"])
    assert "kim@client.example" in text and "create_contact" in text
    data = crm.export(owner.account)
    assert data["contacts"] == [] and data["notes"] == [] and data["deliveries"] == []


def test_deliveries_list_and_show_give_the_processing_record(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["listed@client.example"], subject="Listed")
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg)
    crm.settled(owner.account)
    rows = crm.cli.json("deliveries", "list", "--account", owner.account, "--json")
    assert [(r["subject"], r["status"]) for r in rows] == [("Listed", "filed")]
    shown = crm.cli.json("deliveries", "show", str(rows[0]["id"]))
    assert shown["plan"]["outcome"] == "filed"
    assert "contact Listed <listed@client.example>" in shown["plan"]["applied"]["created"]


def test_the_raw_message_of_a_note_is_downloadable_byte_for_byte(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["raw@client.example"], subject="Keep me raw")
    raw = msg.as_bytes()
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    note = crm.settled(owner.account)["notes"][0]
    result = crm.cli.runner.invoke(
        app, ["deliveries", "raw", str(note["delivery_id"])], env=crm.cli.env
    )
    assert result.exit_code == 0
    assert result.stdout_bytes == raw


@pytest.fixture(params=["sqlite", "postgresql"])
def fragile(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ServerProcess, Cli, str]]:
    """A server of its own (its schema gets broken on purpose), giving up after 2 attempts."""
    env = {**SERVER_ENV, "CRMDROP_MAX_ATTEMPTS": "2", "CRMDROP_RETRY_BASE_SECONDS": "0.1"}
    for own in own_server(request.param, tmp_path, env):
        yield own.server, own.cli, own.url


def _sql(url: str, statement: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)


def test_a_delivery_that_keeps_failing_is_parked_then_retried(
    fragile: tuple[ServerProcess, Cli, str],
) -> None:
    server, cli, url = fragile
    owner = cli.add_user("parker@mycorp.example", "parking")
    _sql(url, "ALTER TABLE attachments RENAME TO attachments_away")
    msg = make_message(
        from_=owner["email"], to=["p@client.example"], attachments=[("a.txt", b"hello")]
    )
    smtp_send(server.smtp_port, owner["email"], [owner["dropbox"]["note"]], msg)

    def parked() -> dict | None:
        rows = cli.json("deliveries", "list", "--account", "parking", "--json")
        return rows[0] if rows and rows[0]["status"] == "failed" else None

    row = wait_for(parked, what="the delivery to be parked")
    assert row["attempts"] == 2
    assert "attachments" in row["last_error"]
    assert row["note_id"] is None and row["reason"].startswith("parked after 2 attempts")
    assert "attachments" in row["reason"]  # the error itself, not a documentation link
    _sql(url, "ALTER TABLE attachments_away RENAME TO attachments")
    assert "queued again" in cli.run("deliveries", "retry", str(row["id"]))

    def filed() -> dict | None:
        data = cli.export("parking")
        return data if data["deliveries"][0]["status"] == "filed" else None

    data = wait_for(filed, what="the retried delivery to be filed")
    assert data["notes"][0]["attachments"] == ["a.txt"]
