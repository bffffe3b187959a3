"""`/metrics` of a running `crmdrop serve` (SQLite and PostgreSQL): what mail sent over
SMTP did shows up in the Prometheus text, read with prometheus-client's own parser."""

from __future__ import annotations

import smtplib
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Crm, own_server
from tests.support import make_message, smtp_send, wait_for

TOKEN = "metrics-secret"  # CRMDROP_METRICS_TOKEN of the shared servers (conftest)


def scrape(port: int, token: str | None = TOKEN) -> dict[tuple[str, tuple[Any, ...]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_smtp_and_the_worker_did(crm: Crm) -> None:
    port = crm.server.http_port
    owner = crm.new_owner()
    crm.settled(owner.account, count=0)
    wait_for(lambda: value(scrape(port), "crmdrop_queue_depth") == 0, what="an empty queue")
    before = scrape(port)
    smtp_send(
        crm.smtp,
        owner.email,
        [owner.dropbox["note"]],
        make_message(from_=owner.email, to=["m@client.example"], subject="Measured"),
    )
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        smtp_send(crm.smtp, owner.email, ["dropbox-nosuchtoken00000000@dropbox.test"], b"x")
    with pytest.raises(smtplib.SMTPDataError):
        smtp_send(
            crm.smtp,
            "stranger@else.example",
            [owner.dropbox["note"]],
            make_message(from_="stranger@else.example", to=["x@y.example"]),
        )
    crm.settled(owner.account, count=2)
    after = scrape(port)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("crmdrop_messages_accepted_total") == 1
    assert delta("crmdrop_messages_filed_total") == 1
    assert delta("crmdrop_messages_failed_total") == 0
    assert delta("crmdrop_messages_refused_total", reason="unknown_dropbox") == 1
    assert delta("crmdrop_messages_refused_total", reason="sender_not_allowed") == 1
    assert delta("crmdrop_accept_to_filed_seconds_count") == 1
    assert delta("crmdrop_accept_to_filed_seconds_bucket", le="+Inf") == 1
    assert value(after, "crmdrop_queue_depth") == 0
    assert value(after, "crmdrop_queue_oldest_age_seconds") == 0
    for name in ("crmdrop_outbox_backlog", "crmdrop_webhook_backlog"):
        assert (name, ()) in after


def test_a_stopped_worker_shows_as_queue_depth_and_age(tmp_path: Any) -> None:
    env = {"CRMDROP_DOMAIN": "dropbox.test", "CRMDROP_METRICS": "loopback"}
    for own in own_server("sqlite", tmp_path, env, worker=False):
        user = own.cli.json(
            "users", "add", "q@corp.example", "--name", "Q", "--account", "q", "--json"
        )
        msg = make_message(from_="q@corp.example", to=["c@client.example"])
        smtp_send(own.server.smtp_port, "q@corp.example", [user["dropbox"]["note"]], msg)

        def aged(port: int = own.server.http_port) -> Any:
            values = scrape(port, token=None)
            return values if value(values, "crmdrop_queue_oldest_age_seconds") > 0.5 else None

        got = wait_for(aged, what="the queued message to age")
        assert value(got, "crmdrop_queue_depth") == 1
        assert value(got, "crmdrop_deliveries", status="queued") == 1


def test_metrics_need_the_token(crm: Crm) -> None:
    url = f"http://127.0.0.1:{crm.server.http_port}/metrics"
    assert httpx.get(url, timeout=30).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    assert "crmdrop_queue_depth" not in wrong.text
