"""Outbound webhooks end to end: mail over SMTP to a running `crmdrop serve`, signed
events POSTed to a real HTTP receiver on loopback, verified with the `standardwebhooks`
package (an implementation independent of ours). SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import smtplib
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from standardwebhooks import Webhook

from tests.conftest import SERVER_ENV, Crm, Owner, OwnServer, own_server
from tests.support import Relay, WebhookReceiver, make_message, smtp_send, wait_for


def register(crm: Crm, owner: Owner, url: str, events: str) -> dict[str, Any]:
    data: dict[str, Any] = crm.cli.json(
        "webhooks", "add", owner.account, url, "--events", events, "--json"
    )
    return data


def endpoints(crm: Crm, owner: Owner) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = crm.cli.json("webhooks", "list", owner.account, "--json")
    return rows


def test_filing_posts_signed_events_that_verify_with_the_standard_library(crm: Crm) -> None:
    owner = crm.new_owner()
    with WebhookReceiver() as receiver:
        hook = register(
            crm, owner, receiver.url, "note.filed,contact.created,case.created,task.created"
        )
        assert hook["secret"].startswith("whsec_")
        msg = make_message(
            from_=owner.email, to=["Jane Roe <jane@client.example>"], subject="Hooked"
        )
        smtp_send(crm.smtp, owner.email, [owner.dropbox["case"]], msg)
        data = crm.settled(owner.account)
        wait_for(lambda: len(receiver.received) >= 3, what="three events")
        time.sleep(0.5)  # nothing more is coming: no task was made
        verifier = Webhook(hook["secret"])
        events = {}
        for request in receiver.received:
            payload = verifier.verify(request.body, request.headers)  # raises when forged
            events[payload["type"]] = payload["data"]
            assert request.headers["webhook-id"].startswith("msg_")
        assert sorted(events) == ["case.created", "contact.created", "note.filed"]
    note = data["notes"][0]
    assert events["note.filed"]["id"] == note["id"]
    assert events["note.filed"]["subject"] == "Hooked"
    assert events["contact.created"]["email"] == "jane@client.example"
    assert events["contact.created"]["name"] == "Jane Roe"
    assert events["note.filed"]["contact_ids"] == [events["contact.created"]["id"]]
    assert events["case.created"]["ref"] == data["cases"][0]["ref"]
    assert events["note.filed"]["case_ids"] == [events["case.created"]["id"]]


def test_a_tampered_body_does_not_verify(crm: Crm) -> None:
    owner = crm.new_owner()
    with WebhookReceiver() as receiver:
        hook = register(crm, owner, receiver.url, "note.filed")
        smtp_send(
            crm.smtp,
            owner.email,
            [owner.dropbox["note"]],
            make_message(from_=owner.email, to=["x@client.example"], subject="Signed"),
        )
        request = wait_for(lambda: receiver.received and receiver.received[0], what="event")
    verifier = Webhook(hook["secret"])
    verifier.verify(request.body, request.headers)
    forged = request.body.replace(b"Signed", b"Forged")
    try:
        verifier.verify(forged, request.headers)
    except Exception as exc:
        assert "signature" in str(exc).lower()
    else:
        raise AssertionError("a forged body verified")


def test_mail_refused_at_the_end_of_data_sends_delivery_rejected(crm: Crm) -> None:
    """A stranger writes to the owner's dropbox over a real SMTP session: refused with
    550 5.7.1 at the end of DATA, and the owner's endpoint hears of it (stage "intake");
    the dropbox token is not in the event."""
    owner = crm.new_owner()
    with WebhookReceiver() as receiver:
        hook = register(crm, owner, receiver.url, "delivery.rejected")
        msg = make_message(
            from_="Mallory <mallory@elsewhere.example>", to=["x@client.example"], subject="Wire"
        )
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp_send(crm.smtp, "mallory@elsewhere.example", [owner.dropbox["case"]], msg)
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error.startswith(b"5.7.1 ")
        request = wait_for(lambda: receiver.received and receiver.received[0], what="event")
        time.sleep(0.5)
        assert len(receiver.received) == 1
    payload = Webhook(hook["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "delivery.rejected"
    data = payload["data"]
    [delivery] = crm.cli.export(owner.account)["deliveries"]
    assert data["id"] == delivery["id"] and delivery["status"] == "rejected"
    assert data["status"] == "rejected" and data["stage"] == "intake"
    assert data["reason"].startswith("rejected: ")
    assert refused.value.smtp_error.decode()[6:40] in data["reason"]
    assert data["author"] == "mallory@elsewhere.example" and data["subject"] == "Wire"
    assert data["dropbox"] == "case" and data["attempts"] == 0
    token = owner.dropbox["case"].split("@")[0].split("-")[1]
    assert token not in request.body.decode()


def test_a_refusal_with_no_endpoint_wanting_it_queues_nothing(crm: Crm) -> None:
    owner = crm.new_owner()
    with WebhookReceiver() as receiver:
        register(crm, owner, receiver.url, "note.filed")  # not delivery.rejected
        msg = make_message(from_="mallory@elsewhere.example", to=["x@client.example"])
        with pytest.raises(smtplib.SMTPDataError):
            smtp_send(crm.smtp, "mallory@elsewhere.example", [owner.dropbox["note"]], msg)
        time.sleep(1)
        assert receiver.received == []


def test_an_endpoint_answering_500_is_retried_and_the_attempts_are_logged(crm: Crm) -> None:
    owner = crm.new_owner()
    with WebhookReceiver(statuses=[500, 503]) as receiver:
        register(crm, owner, receiver.url, "note.filed")
        smtp_send(
            crm.smtp,
            owner.email,
            [owner.dropbox["note"]],
            make_message(from_=owner.email, to=["y@client.example"], subject="Retry me"),
        )
        wait_for(lambda: len(receiver.received) >= 3, what="three tries")
        ids = {r.headers["webhook-id"] for r in receiver.received}
        assert len(ids) == 1  # the same message each time: the receiver can deduplicate
    rows = wait_for(
        lambda: (e := endpoints(crm, owner)) and len(e[0]["last_attempts"]) >= 3 and e,
        what="the attempts log",
    )
    codes = [a["status_code"] for a in rows[0]["last_attempts"]]
    assert codes == [200, 503, 500]  # newest first
    assert rows[0]["enabled"] is True and rows[0]["failing_since"] is None


def test_an_endpoint_failing_past_the_limit_is_disabled_and_its_owner_told_once(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    with WebhookReceiver(always=500) as receiver:
        hook = register(crm, owner, receiver.url, "note.filed")
        smtp_send(
            crm.smtp,
            owner.email,
            [owner.dropbox["note"]],
            make_message(from_=owner.email, to=["z@client.example"], subject="Failing"),
        )
        rows = wait_for(
            lambda: (e := endpoints(crm, owner)) and not e[0]["enabled"] and e,
            what="the endpoint to be disabled",
        )
        notice = f"webhook endpoint #{hook['id']} disabled"
        told = wait_for(
            lambda: [m for m in crm.relay.messages_to(owner.email) if notice.encode() in m.content],
            what="the notice",
        )
        tries = len(receiver.received)
        smtp_send(
            crm.smtp,
            owner.email,
            [owner.dropbox["note"]],
            make_message(from_=owner.email, to=["z2@client.example"], subject="After"),
        )
        crm.settled(owner.account, count=2)
        time.sleep(1.0)
        assert len(receiver.received) == tries  # a disabled endpoint gets nothing more
    assert rows[0]["disabled_at"] is not None
    assert len(told) == 1
    again = [m for m in crm.relay.messages_to(owner.email) if notice.encode() in m.content]
    assert len(again) == 1


def test_an_unknown_event_or_a_bad_url_is_refused_and_nothing_is_added(crm: Crm) -> None:
    owner = crm.new_owner()
    for url, events, says in (
        ("http://127.0.0.1:9/x", "note.filed,note.deleted", "unknown event 'note.deleted'"),
        ("ftp://example.com/x", "note.filed", "is not an http(s) URL"),
        ("http://127.0.0.1:9/x", " , ", "name at least one event"),
    ):
        out = crm.cli.run("webhooks", "add", owner.account, url, "--events", events, ok=False)
        assert says in out
    assert endpoints(crm, owner) == []


def test_removing_an_endpoint_stops_its_events(crm: Crm) -> None:
    owner = crm.new_owner()
    with WebhookReceiver() as receiver:
        hook = register(crm, owner, receiver.url, "note.filed")
        assert "removed" in crm.cli.run("webhooks", "remove", str(hook["id"]))
        smtp_send(
            crm.smtp,
            owner.email,
            [owner.dropbox["note"]],
            make_message(from_=owner.email, to=["w@client.example"], subject="Gone"),
        )
        crm.settled(owner.account)
        time.sleep(0.5)
        assert receiver.received == []
    assert endpoints(crm, owner) == []
    out = crm.cli.run("webhooks", "remove", str(hook["id"]), ok=False)
    assert f"no webhook endpoint #{hook['id']}" in out


def test_tokens_are_shown_once_listed_without_the_secret_and_revoked(crm: Crm) -> None:
    owner = crm.new_owner()
    made = crm.cli.json("tokens", "create", owner.email, "--name", "ci", "--json")
    assert set(made) == {"id", "token"}
    listed = crm.cli.json("tokens", "list", owner.email, "--json")
    assert [t["name"] for t in listed] == ["ci"]
    assert made["token"] not in json.dumps(listed)
    assert listed[0]["revoked_at"] is None
    crm.cli.run("tokens", "revoke", str(made["id"]))
    assert crm.cli.json("tokens", "list", owner.email, "--json")[0]["revoked_at"] is not None
    out = crm.cli.run("tokens", "create", owner.email, "--name", "  ", ok=False)
    assert "needs a name" in out


SLOW_POLL_ENV = {**SERVER_ENV, "CRMDROP_WORKER_POLL_SECONDS": "60"}


@pytest.fixture(params=["sqlite", "postgresql"])
def slow_poll(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OwnServer]:
    """A server whose safety polls are a minute apart: only wake-ups can be quick."""
    yield from own_server(request.param, tmp_path, SLOW_POLL_ENV)


def test_a_filing_wakes_the_webhook_sender_without_waiting_for_its_poll(
    slow_poll: OwnServer,
) -> None:
    cli = slow_poll.cli
    data = cli.add_user("woken@mycorp.example", "woken")
    with WebhookReceiver() as receiver:
        cli.json("webhooks", "add", "woken", receiver.url, "--events", "note.filed", "--json")
        raw = make_message(from_=data["email"], to=["x@client.example"], subject="Woken")
        smtp_send(slow_poll.server.smtp_port, data["email"], [data["dropbox"]["note"]], raw)
        # The worker is woken by the accept and the sender by the filing: well inside
        # the 60 s polls, or this times out.
        request = wait_for(lambda: receiver.received and receiver.received[0], timeout=30)
    assert json.loads(request.body)["type"] == "note.filed"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_filing_wakes_the_reply_sender_without_waiting_for_its_poll(
    backend: str, tmp_path: Path, relay: Relay
) -> None:
    """The filing thread wakes the sender of each queue its batch added to: the error
    reply of a message with no contact is the reply sender's."""
    env = {**SLOW_POLL_ENV, "CRMDROP_SMTP_RELAY": relay.address}
    for own in own_server(backend, tmp_path, env):
        data = own.cli.add_user("replied@mycorp.example", "replied")
        owner, box = data["email"], data["dropbox"]["note"]
        raw = make_message(from_=owner, to=[box], subject="To self")  # no contact in it
        smtp_send(own.server.smtp_port, owner, [box], raw)
        # Well inside the 60 s polls, or this times out.
        wait_for(partial(relay.messages_to, owner), timeout=30, what="the error reply")


# The idle server's own backends, told apart by their application_name (libpq reads it
# from PGAPPNAME).
IDLE_APP = "crmdrop-idle-test"


def test_an_idle_server_does_not_poll_its_database(tmp_path: Path) -> None:
    """PostgreSQL shows when each backend last ran a statement: with its safety polls an
    hour apart, an idle `serve` (worker, reply sender, webhook sender) runs none — no busy
    polling. Counted per backend of the server, not as the database's commits, which
    PostgreSQL's own work (autovacuum on a new database) and late statistics also move:
    that count failed under the parallel suite now and then."""
    env = {**SERVER_ENV, "CRMDROP_WORKER_POLL_SECONDS": "3600", "PGAPPNAME": IDLE_APP}
    for own in own_server("postgresql", tmp_path, env):
        # Two 4 s windows: a sender polling every 0.2 s would run ≈ 20 statements in
        # each, and one late step of the filing's own work could fall into one.
        windows = _idle_statements(own)
        assert min(len(ran) for ran in windows) == 0, windows


def _idle_statements(own: OwnServer) -> list[list[str]]:
    """What the server's backends ran (their last statement) in each of two 4 s windows,
    once it has filed a message and its backends have all been idle for 3 s."""
    data = own.cli.add_user("idle@mycorp.example", "idle")
    raw = make_message(from_=data["email"], to=["x@client.example"], subject="Idle")
    smtp_send(own.server.smtp_port, data["email"], [data["dropbox"]["note"]], raw)
    wait_for(lambda: own.cli.export("idle")["notes"], what="the note")
    _wait_until_backends_idle(own.url, seconds=3)
    with psycopg.connect(own.url, autocommit=True) as conn:
        seen = [_server_backends(conn)]
        for _ in range(2):
            time.sleep(4)
            seen.append(_server_backends(conn))
    return [_ran_between(before, after) for before, after in itertools.pairwise(seen)]


def _ran_between(
    before: dict[int, tuple[str, str]], after: dict[int, tuple[str, str]]
) -> list[str]:
    """The last statement of each backend whose state changed between two looks."""
    return [query for pid, (changed, query) in after.items() if before.get(pid) != (changed, query)]


def _server_backends(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str]]:
    """Each of the server's backends: when its state last changed, and its last statement
    (a backend new since the last look counts as having run one)."""
    rows = conn.execute(
        "SELECT pid, state_change::text, query FROM pg_stat_activity WHERE application_name = %s",
        (IDLE_APP,),
    ).fetchall()
    return {pid: (changed or "", query) for pid, changed, query in rows}


def _wait_until_backends_idle(url: str, *, seconds: float, timeout: float = 60) -> None:
    """Until every backend of the database has been idle `seconds`, so that the work the
    filing started (the outbox, the webhook sender) is over before the windows. A server
    that polls never gets there; after `timeout` the windows are measured anyway."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
                " AND (state <> 'idle' OR state_change > now() - make_interval(secs => %s))",
                (seconds,),
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.5)
