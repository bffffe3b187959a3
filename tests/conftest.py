"""Shared fixtures: one running `crmdrop serve` per database backend, a relay, a CLI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import DOMAIN, Cli, Relay, ServerProcess, pg_database, wait_for

SERVER_ENV = {
    "CRMDROP_DOMAIN": DOMAIN,
    "CRMDROP_RETRY_BASE_SECONDS": "0.2",
    "CRMDROP_WORKER_POLL_SECONDS": "0.05",
    "CRMDROP_MAX_MESSAGE_SIZE": "1000000",
    "CRMDROP_MAX_RECIPIENTS": "5",
    "CRMDROP_REPLY_RATE_PER_HOUR": "3",
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


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def crm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, relay: Relay
) -> Iterator[Crm]:
    """`crmdrop serve` on SQLite and on PostgreSQL: every pipeline test runs on both."""
    backend: str = request.param
    data_dir = tmp_path_factory.mktemp(f"crm-{backend}")
    if backend == "postgresql":
        with pg_database() as url:
            yield from _run(backend, data_dir, _server_env(url, relay), relay)
    else:
        yield from _run(backend, data_dir, _server_env(None, relay), relay)


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


def own_server(backend: str, data_dir: Any, env: dict[str, str]) -> Iterator[OwnServer]:
    """Start one on `backend` ("sqlite" or "postgresql", in a fresh database)."""
    if backend == "postgresql":
        with pg_database() as url:
            yield from _own(data_dir, {**env, "CRMDROP_DATABASE_URL": url}, url)
    else:
        yield from _own(data_dir, env, f"sqlite:///{data_dir / 'crmdrop.db'}")


def _own(data_dir: Any, env: dict[str, str], url: str) -> Iterator[OwnServer]:
    server = ServerProcess(data_dir, env)
    server.start()
    try:
        yield OwnServer(server, Cli({**env, "CRMDROP_DATA_DIR": str(data_dir)}), url)
    finally:
        server.stop()
