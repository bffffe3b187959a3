"""delivery.rejected and delivery.failed: queued in the worker's transaction and sent by the
webhook sender to a real HTTP receiver — in process, on SQLite and PostgreSQL, because
the states that cause them (a sender the worker refuses, a message that exhausted its
attempts) are set up in the database between accepting and filing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from standardwebhooks import Webhook

from crmdrop.config import Settings, load_settings
from crmdrop.outbound.webhooks import send_webhook
from crmdrop.receive.service import Receiver
from crmdrop.store import accounts, webhooks
from crmdrop.store.db import Database
from crmdrop.store.models import Delivery, UserAddress
from crmdrop.worker import process_one
from tests.support import WebhookReceiver, make_message, pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, Settings]]:
    def open_db(url: str | None) -> tuple[Database, Settings]:
        settings = load_settings(
            data_dir=tmp_path,
            domain="dropbox.test",
            database_url=url,
            webhook_allow_private=True,  # the receiver is on 127.0.0.1
        )
        db = Database(settings.db_url)
        db.migrate()
        return db, settings

    if request.param == "postgresql":
        with pg_database() as url:
            db, settings = open_db(url)
            yield db, settings
            db.dispose()
    else:
        db, settings = open_db(None)
        yield db, settings
        db.dispose()


def accept(db: Database, settings: Settings, to: str, author: str) -> None:
    receiver = Receiver(db, settings)
    reply, rcpt = receiver.check_recipient(to)
    assert rcpt is not None, reply
    msg = make_message(from_=author, to=["client@client.example"], subject="Watched")
    verdict = receiver.accept(
        mail_from=author, rcpts=[rcpt], raw=msg.as_bytes(), protocol="smtp", peer="t"
    )
    assert verdict.replies[0].startswith("250"), verdict.replies


def deliver_all(db: Database, settings: Settings) -> None:
    while send_webhook(db, settings):
        pass


def test_a_message_the_worker_refuses_sends_delivery_rejected(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    with db.writing() as session:
        user = accounts.add_user(session, "own@corp.example", name="O", account="acme")
        accounts.add_user_address(session, "own@corp.example", "alias@corp.example")
        box, account_id = f"dropbox-{user.token}@dropbox.test", user.account_id
    with WebhookReceiver() as receiver:
        with db.writing() as session:
            _, secret = webhooks.add_endpoint(
                session,
                account_id,
                receiver.url,
                "delivery.rejected",
                user_id=None,
                now=accounts.now(),
                allow_private=True,
            )
        accept(db, settings, box, "alias@corp.example")
        with db.writing() as session:  # the alias is gone before the worker looks
            session.execute(delete(UserAddress).where(UserAddress.email == "alias@corp.example"))
        assert process_one(db, settings)
        deliver_all(db, settings)
        [request] = receiver.received
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "delivery.rejected"
    assert payload["data"]["status"] == "rejected" and payload["data"]["subject"] == "Watched"
    assert user.token not in json.dumps(payload)


def test_a_message_parked_after_its_attempts_sends_delivery_failed(
    store: tuple[Database, Settings],
) -> None:
    db, settings = store
    with db.writing() as session:
        user = accounts.add_user(session, "own@corp.example", name="O", account="acme")
        box, account_id = f"dropbox-{user.token}@dropbox.test", user.account_id
    with WebhookReceiver() as receiver:
        with db.writing() as session:
            _, secret = webhooks.add_endpoint(
                session,
                account_id,
                receiver.url,
                ["delivery.failed", "note.filed"],
                user_id=None,
                now=accounts.now(),
                allow_private=True,
            )
        accept(db, settings, box, "own@corp.example")
        with db.writing() as session:  # as if a worker had died on it every time
            session.execute(update(Delivery).values(attempts=settings.max_attempts))
        process_one(db, settings)
        deliver_all(db, settings)
        with db.reading() as session:
            status = session.scalar(select(Delivery.status))
        [request] = receiver.received
    assert status == "failed"
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "delivery.failed"
    assert "parked after" in payload["data"]["reason"]
