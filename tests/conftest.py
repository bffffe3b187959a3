"""Shared fixtures: one running `crmdrop serve` per database backend, a relay, a CLI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crmdrop.config import Settings, load_settings
from crmdrop.store.db import Database
from tests.support import DOMAIN, Cli, Relay, ServerProcess, pg_database, wait_for

SERVER_ENV = {
    "CRMDROP_DOMAIN": DOMAIN,
    "CRMDROP_RETRY_BASE_SECONDS": "0.2",
    "CRMDROP_WORKER_POLL_SECONDS": "0.05",
    "CRMDROP_MAX_MESSAGE_SIZE": "1000000",
    "CRMDROP_MAX_RECIPIENTS": "5",
    "CRMDROP_REPLY_RATE_PER_HOUR": "3",
    "CRMDROP_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "CRMDROP_WEBHOOK_DISABLE_AFTER_SECONDS": "2",
    "CRMDROP_WEBHOOK_TIMEOUT_SECONDS": "5",
    # The tests' webhook receivers listen on 127.0.0.1 (tests/test_webhook_ssrf.py runs
    # servers without it, where such URLs are refused).
    "CRMDROP_WEBHOOK_ALLOW_PRIVATE": "true",
    "CRMDROP_API_RATE_LIMIT": "100000/minute",
    "CRMDROP_API_MAX_BODY_BYTES": "20000",
    "CRMDROP_METRICS": "token",
    "CRMDROP_METRICS_TOKEN": "metrics-secret",
    # Sign-in throttling, small so that its tests are short (tests/web/test_forms.py)
    "CRMDROP_LOGIN_MAX_FAILURES": "3",
    "CRMDROP_LOGIN_MAX_FAILURES_IP": "6",
    # Every test talks from 127.0.0.1, and many try unknown dropboxes on purpose:
    # the guesser's tarpit is tested on a server of its own (tests/test_port_limits.py).
    "CRMDROP_SMTP_UNKNOWN_RCPT_TARPIT": "100000",
    "CRMDROP_SMTP_UNKNOWN_RCPT_LIMIT": "100000",
}


@dataclass
class Owner:
    email: str
    account: str
    dropbox: dict[str, str]


@dataclass
class Crm:
    """A running crmdrop, its CLI, and the relay its replies go to."""

    backend: str
    server: ServerProcess
    cli: Cli
    relay: Relay

    @property
    def smtp(self) -> int:
        return self.server.smtp_port

    @property
    def lmtp(self) -> int:
        return self.server.lmtp_port

    def new_owner(self, *, timezone: str = "UTC", account: str | None = None) -> Owner:
        """A user in a fresh account (each test its own, so tests never see each other)."""
        tag = uuid.uuid4().hex[:10]
        acct = account or f"acct-{tag}"
        data = self.cli.add_user(f"owner-{tag}@mycorp.example", acct, timezone=timezone)
        return Owner(email=data["email"], account=acct, dropbox=data["dropbox"])

    def export(self, account: str) -> dict[str, Any]:
        return self.cli.export(account)

    def settled(self, account: str, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        """The export once `count` deliveries of the account are no longer queued."""

        def check() -> dict[str, Any] | None:
            data = self.export(account)
            done = [d for d in data["deliveries"] if d["status"] != "queued"]
            return data if len(done) >= count else None

        result: dict[str, Any] = wait_for(
            check, timeout=timeout, what=f"{count} deliveries of {account} to settle"
        )
        return result


@pytest.fixture(scope="session")
def relay() -> Iterator[Relay]:
    with Relay() as r:
        yield r


def _server_env(url: str | None, relay: Relay) -> dict[str, str]:
    env = {**SERVER_ENV, "CRMDROP_SMTP_RELAY": relay.address}
    if url:
        env["CRMDROP_DATABASE_URL"] = url
    return env


@pytest.fixture(params=["sqlite", "postgresql"])
def crm(request: pytest.FixtureRequest) -> Crm:
    """`crmdrop serve` on SQLite and on PostgreSQL: every pipeline test runs on both.

    Both servers run for the whole session: pytest-xdist runs each file's tests together,
    so a worker goes back and forth between the backends, and a parametrized session
    fixture would be stopped and started again at each switch."""
    server: Crm = request.getfixturevalue(f"crm_{request.param}")
    return server


@pytest.fixture(scope="session")
def crm_sqlite(tmp_path_factory: pytest.TempPathFactory, relay: Relay) -> Iterator[Crm]:
    data_dir = tmp_path_factory.mktemp("crm-sqlite")
    yield from _run("sqlite", data_dir, _server_env(None, relay), relay)


@pytest.fixture(scope="session")
def crm_postgresql(tmp_path_factory: pytest.TempPathFactory, relay: Relay) -> Iterator[Crm]:
    data_dir = tmp_path_factory.mktemp("crm-postgresql")
    with pg_database() as url:
        yield from _run("postgresql", data_dir, _server_env(url, relay), relay)


def _run(backend: str, data_dir: Any, env: dict[str, str], relay: Relay) -> Iterator[Crm]:
    server = ServerProcess(data_dir, env)
    server.start()
    try:
        yield Crm(backend, server, Cli({**env, "CRMDROP_DATA_DIR": str(data_dir)}), relay)
    finally:
        server.stop()


@dataclass
class OwnServer:
    """A `crmdrop serve` of a test's own (its settings or its schema are the test's)."""

    server: ServerProcess
    cli: Cli
    url: str  # the database, for a test that reaches into it


def own_server(
    backend: str,
    data_dir: Any,
    env: dict[str, str],
    *args: str,
    demo: bool = False,
    worker: bool = True,
) -> Iterator[OwnServer]:
    """Start one on `backend` ("sqlite" or "postgresql", in a fresh database); `args`:
    more `crmdrop serve` flags; `worker=False`: `serve --no-worker` (mail stays queued)."""
    if backend == "postgresql":
        with pg_database() as url:
            env = {**env, "CRMDROP_DATABASE_URL": url}
            yield from _own(data_dir, env, url, args, demo=demo, worker=worker)
    else:
        url = f"sqlite:///{data_dir / 'crmdrop.db'}"
        yield from _own(data_dir, env, url, args, demo=demo, worker=worker)


def _own(
    data_dir: Any, env: dict[str, str], url: str, args: tuple[str, ...], *, demo: bool, worker: bool
) -> Iterator[OwnServer]:
    server = ServerProcess(data_dir, env, *args, demo=demo)
    server.start(worker=worker)
    try:
        yield OwnServer(server, Cli({**env, "CRMDROP_DATA_DIR": str(data_dir)}), url)
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, Settings]]:
    """A database of the test's own (not migrated: the test decides), on both backends."""

    def open_db(url: str | None) -> tuple[Database, Settings]:
        settings = load_settings(data_dir=tmp_path, domain="dropbox.test", database_url=url)
        return Database(settings.db_url), settings

    if request.param == "postgresql":
        with pg_database() as url:
            db, settings = open_db(url)
            yield db, settings
            db.dispose()
    else:
        db, settings = open_db(None)
        yield db, settings
        db.dispose()
