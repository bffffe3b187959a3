"""Webhook URLs may not reach this host or its private network (server-side request
forgery), docs/webhooks.md: refused at registration through both doors (the API answers
422, the CLI exits 1), and checked again when each message is sent, against what the
host resolves to then — unless CRMDROP_WEBHOOK_ALLOW_PRIVATE is set (as SERVER_ENV does
for the other tests, whose receivers listen on 127.0.0.1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from crmdrop import netguard
from crmdrop.config import Settings
from crmdrop.outbound.webhooks import _pinned, send_webhook
from crmdrop.store import accounts, webhooks
from crmdrop.store.db import Database
from crmdrop.store.models import WebhookAttempt, WebhookMessage
from crmdrop.worker import process_one
from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.support import WebhookReceiver
from tests.test_webhook_events import accept

REFUSED = [  # (url, what the refusal names)
    ("http://127.0.0.1:8080/hook", "127.0.0.1 is loopback"),
    ("http://localhost/hook", "localhost resolves to 127.0.0.1, which is loopback"),
    ("http://[::1]/hook", "::1 is loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1 is loopback"),
    ("http://10.1.2.3/hook", "10.1.2.3 is private"),
    ("https://192.168.0.10/hook", "192.168.0.10 is private"),
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is link-local"),  # cloud metadata
    ("http://[fe80::1]/hook", "fe80::1 is link-local"),
    ("http://224.0.0.1/hook", "224.0.0.1 is multicast"),
    ("http://240.0.0.1/hook", "240.0.0.1 is reserved"),
    ("http://0.0.0.0/hook", "0.0.0.0 is unspecified"),
    ("http://100.64.0.1/hook", "100.64.0.1 is not public"),  # carrier-grade NAT
    ("http://no-such-host.invalid/hook", "no-such-host.invalid does not resolve"),
]


@pytest.mark.parametrize(
    "address,reason",
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.53", "loopback"),
        ("172.16.0.1", "private"),
        ("fd00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not public"),
    ],
)
def test_addresses_are_judged_by_kind(address: str, reason: str | None) -> None:
    assert netguard.blocked_reason(ipaddress.ip_address(address)) == reason


def test_a_send_connects_to_the_checked_address_with_the_original_name() -> None:
    url, headers, extensions = _pinned("https://8.8.8.8:8443/hook?x=1")
    assert str(url) == "https://8.8.8.8:8443/hook?x=1"
    assert headers == {"host": "8.8.8.8:8443"} and extensions == {"sni_hostname": "8.8.8.8"}
    with pytest.raises(
        netguard.BlockedAddress, match=r"localhost resolves to 127\.0\.0\.1, which is loopback"
    ):
        _pinned("http://localhost:9/hook")


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnServer]:
    """A server with the default: private webhook URLs refused."""
    env = {k: v for k, v in SERVER_ENV.items() if k != "CRMDROP_WEBHOOK_ALLOW_PRIVATE"}
    yield from own_server("sqlite", tmp_path_factory.mktemp("ssrf"), env)


def _owner(crm: OwnServer, tag: str) -> dict[str, Any]:
    return crm.cli.add_user(f"owner-{tag}@corp.example", f"ssrf-{tag}")


def test_the_api_refuses_private_urls_with_422_and_adds_nothing(strict: OwnServer) -> None:
    owner = _owner(strict, "api")
    token = strict.cli.json("tokens", "create", owner["email"], "--name", "t", "--json")["token"]
    base = f"http://127.0.0.1:{strict.server.http_port}/api/v1"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
        for url, says in REFUSED:
            response = api.post("/webhooks", json={"url": url, "events": ["note.filed"]})
            assert response.status_code == 422, (url, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            detail = response.json()["detail"]
            assert says in detail and "CRMDROP_WEBHOOK_ALLOW_PRIVATE" in detail, (url, detail)
        response = api.post(
            "/webhooks", json={"url": "gopher://8.8.8.8/", "events": ["note.filed"]}
        )
        assert response.status_code == 422 and "not an http(s) URL" in response.text
        assert api.get("/webhooks").json()["items"] == []


def test_the_cli_refuses_private_urls_and_adds_nothing(strict: OwnServer) -> None:
    owner = _owner(strict, "cli")
    for url, says in REFUSED:
        out = strict.cli.run(
            "webhooks", "add", owner["account"], url, "--events", "note.filed", ok=False
        )
        assert "refused webhook URL" in out and says in out, (url, out)
    assert strict.cli.json("webhooks", "list", owner["account"], "--json") == []


def test_a_public_ip_url_is_registered(strict: OwnServer) -> None:
    owner = _owner(strict, "public")
    made = strict.cli.json(
        "webhooks", "add", owner["account"], "https://8.8.8.8/hook", "--events", "note.filed",
        "--json",
    )  # fmt: skip
    assert made["secret"].startswith("whsec_")


def test_the_send_checks_the_address_again_and_never_connects(
    store: tuple[Database, Settings],
) -> None:
    """An endpoint stored while it was allowed (the setting was on, or its name pointed
    elsewhere then) now resolves to loopback: the worker refuses to post, logs why as a
    failed attempt (retried later, like any failure), and the receiver gets nothing."""
    db, settings = store
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "own@corp.example", name="O", account="acme")
        box, account_id = f"dropbox-{user.token}@dropbox.test", user.account_id
    with WebhookReceiver() as receiver:
        url = receiver.url.replace("127.0.0.1", "localhost")
        with db.writing() as session:
            webhooks.add_endpoint(
                session, account_id, url, "note.filed", user_id=None,
                now=accounts.now(), allow_private=True,
            )  # fmt: skip
        accept(db, settings, box, "own@corp.example")
        assert process_one(db, settings)  # filed: note.filed is queued
        assert not settings.webhook_allow_private
        assert send_webhook(db, settings)
        assert receiver.received == []
    with db.reading() as session:
        attempt = session.scalars(select(WebhookAttempt)).one()
        message = session.scalars(select(WebhookMessage)).one()
    assert attempt.status_code is None
    assert attempt.error is not None and attempt.error.startswith(
        "refused: localhost resolves to 127.0.0.1, which is loopback"
    ), attempt.error
    assert message.status == webhooks.MessageStatus.QUEUED  # retried later, not dropped
